//! One function per route; each answers with its JSON or an [`AppError`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiLimits, AppError, AppState, JobProblem, OPENAPI};
use crate::job::{JobId, JobResult, JobView};
use crate::ops::metrics::{self, Metrics};
use crate::ops::status::StatusReport;
use crate::producer;
use crate::queue::{JobPage, PageOf, Pushed, Queue, QueueError};

pub(super) async fn not_found() -> AppError {
    AppError::NotFound
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the store: an orchestrator's probe has its own short
/// timeout, and "slower than this" is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    tokio::time::timeout(READY_TIMEOUT, state.queue.ping())
        .await
        .map_err(|_| AppError::Unavailable("ping timed out".into()))??;
    // The replicas behind acknowledged writes: degraded is still ready (the queue works, and
    // says what it risks); strict with too few connected is not (no write is acknowledged).
    let replication = tokio::time::timeout(READY_TIMEOUT, state.queue.replicas())
        .await
        .map_err(|_| AppError::Unavailable("reading the replicas timed out".into()))??;
    let Some(r) = replication else {
        return Ok(Json(serde_json::json!({ "status": "ready" })));
    };
    if r.degraded() && r.mode == crate::queue::ReplicationMode::Strict {
        return Err(AppError::Unavailable(r.describe()));
    }
    let status = if r.degraded() { "degraded" } else { "ready" };
    Ok(Json(serde_json::json!({
        "status": status,
        "replication": r.describe(),
        "replicas_connected": r.connected,
        "min_replicas": r.min_replicas,
    })))
}

pub(super) async fn status(State(state): State<AppState>) -> Result<Json<StatusReport>, AppError> {
    Ok(Json(StatusReport::read(state.queue.as_ref()).await?))
}

pub(super) async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, AppError> {
    if id.is_empty() || id.len() > 64 {
        return Err(AppError::NotFound);
    }
    match state.queue.job_view(&JobId(id)).await? {
        Some(job) => Ok(Json(job)),
        None => Err(AppError::NotFound),
    }
}

/// Query of `GET /v1/jobs/list`.
#[derive(Deserialize)]
pub(super) struct ListQuery {
    of: Option<PageOf>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Most jobs on one page of `GET /v1/jobs/list`.
const MAX_PAGE: usize = 200;

/// `GET /v1/jobs/list?of=done|dead|waiting&cursor=C&limit=N`: one page of jobs and the
/// cursor of the next (`Queue::jobs_page`), never the whole set.
pub(super) async fn job_list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobPage>, AppError> {
    let of = q.of.unwrap_or(PageOf::Dead);
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    if q.cursor.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(AppError::BadRequest(
            "cursor is not one this server gave".into(),
        ));
    }
    match state
        .queue
        .jobs_page(of, q.cursor.as_deref().filter(|c| !c.is_empty()), limit)
        .await
    {
        Ok(page) => Ok(Json(page)),
        Err(QueueError::Config(_)) => Err(AppError::BadRequest(
            "cursor is not one this server gave".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Query of `GET /v1/jobs/by-key`.
#[derive(Deserialize)]
pub(super) struct ByKey {
    tenant: Option<String>,
    key: Option<String>,
}

/// `GET /v1/jobs/by-key?tenant=T&key=K`: the job pushed for tenant T with idempotency key
/// K, as `GET /v1/jobs/{id}` shows it.
pub(super) async fn job_by_key(
    State(state): State<AppState>,
    Query(q): Query<ByKey>,
) -> Result<Json<JobView>, AppError> {
    let (Some(tenant), Some(key)) = (q.tenant, q.key) else {
        return Err(AppError::BadRequest(
            "name the job's tenant and idempotency key: ?tenant=T&key=K".into(),
        ));
    };
    if tenant.is_empty() || tenant.len() > 256 || key.is_empty() || key.len() > 1024 {
        return Err(AppError::NotFound);
    }
    let Some(id) = state.queue.find_job(&tenant, &key).await? else {
        return Err(AppError::NotFound);
    };
    match state.queue.job_view(&id).await? {
        Some(job) => Ok(Json(job)),
        None => Err(AppError::NotFound),
    }
}

/// Answer of `POST /v1/jobs`.
#[derive(Serialize)]
pub(super) struct EnqueueAnswer {
    /// Jobs newly enqueued.
    enqueued: u64,
    /// Jobs whose key was enqueued before (not enqueued again).
    duplicate: u64,
    /// One per job, in request order.
    jobs: Vec<Pushed>,
}

/// Where a job sits in a request body, for its field errors.
#[derive(Clone, Copy)]
enum Position {
    /// 0-based index in a JSON body.
    Index(usize),
    /// 1-based line of a JSON Lines body.
    Line(u64),
}

impl Position {
    fn error(self, e: crate::leadsquared::FieldError) -> JobProblem {
        let (index, line) = match self {
            Position::Index(i) => (Some(i), None),
            Position::Line(l) => (None, Some(l)),
        };
        JobProblem {
            index,
            line,
            field: e.field,
            reason: e.reason,
        }
    }
}

/// Splits a body into its jobs' JSON texts: one object or an array of them
/// (`application/json`), or one per non-blank line (`application/x-ndjson`).
fn split_jobs(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(Position, String)>, AppError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body_error = |reason: String| {
        AppError::Invalid(vec![JobProblem {
            index: None,
            line: None,
            field: "body".into(),
            reason,
        }])
    };
    match media.as_str() {
        "application/json" => {
            // A syntax error names a position, never the input.
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| body_error(e.to_string()))?;
            match value {
                serde_json::Value::Array(items) => Ok(items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (Position::Index(i), v.to_string()))
                    .collect()),
                v @ serde_json::Value::Object(_) => Ok(vec![(Position::Index(0), v.to_string())]),
                _ => Err(body_error(
                    "must be a job object or an array of job objects".into(),
                )),
            }
        }
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            let text =
                std::str::from_utf8(body).map_err(|e| body_error(format!("not UTF-8 ({e})")))?;
            Ok(text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| (Position::Line(n as u64 + 1), l.to_string()))
                .collect())
        }
        _ => Err(AppError::UnsupportedMediaType),
    }
}

/// The jobs of a request body, each checked as `enqueue` checks a line of a job file
/// ([`producer::check_line`]), all or nothing: for `POST /v1/jobs` and `POST /v1/sync`.
async fn checked_jobs(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<crate::job::NewJob>, AppError> {
    let body = read_body(body, &state.limits)?;
    let items = split_jobs(headers, &body)?;
    if items.is_empty() {
        return Err(AppError::BadRequest("the body holds no job".into()));
    }
    if items.len() > state.limits.max_jobs_per_request {
        return Err(AppError::BadRequest(format!(
            "{} jobs in one request; at most {} (split the batch)",
            items.len(),
            state.limits.max_jobs_per_request
        )));
    }
    let registered: HashSet<String> = state.queue.tenant_names().await?.into_iter().collect();
    let mut jobs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (at, text) in items {
        // The check `enqueue` makes of a line of a job file, so both refuse the same jobs
        // with the same words.
        match producer::check_line(text.as_bytes(), &registered, &state.limits.webhook) {
            Ok(job) => jobs.push(job),
            Err(problems) => errors.extend(problems.into_iter().map(|e| at.error(e))),
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    Ok(jobs)
}

/// `POST /v1/jobs`: the validation ([`producer::check_line`]) and idempotency of `enqueue`,
/// all or nothing. A job under a key already done with another body is an update, a
/// `"delete": true` line a delete (issue 18).
pub(super) async fn post_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EnqueueAnswer>), AppError> {
    let jobs = checked_jobs(&state, &headers, body).await?;
    let pushed = match state.queue.push(&jobs).await {
        Ok(p) => p,
        // A tenant removed between the check and the push.
        Err(QueueError::UnknownTenant(t)) => {
            return Err(AppError::BadRequest(format!(
                "unknown tenant {t:?}; import it with `lsq-webhooks tenants import`"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let enqueued = pushed
        .iter()
        .filter(|p| matches!(p, Pushed::Enqueued { .. }))
        .count() as u64;
    let duplicate = pushed.len() as u64 - enqueued;
    tracing::info!(enqueued, duplicate, "jobs enqueued over HTTP");
    Ok((
        StatusCode::ACCEPTED,
        Json(EnqueueAnswer {
            enqueued,
            duplicate,
            jobs: pushed,
        }),
    ))
}

/// Query of `POST /v1/sync`.
#[derive(Deserialize)]
pub(super) struct SyncQuery {
    /// Return the plan and change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Also delete this product's webhooks of the named tenants that the body does not name.
    #[serde(default)]
    prune: bool,
}

/// Answer of `POST /v1/sync`.
#[derive(Serialize)]
pub(super) struct SyncAnswer {
    /// Whether nothing was changed.
    dry_run: bool,
    /// The plan per tenant.
    tenants: Vec<crate::sync::TenantPlan>,
    /// Jobs enqueued to carry it out (0 on a dry run).
    enqueued: u64,
    /// Of the plan's jobs, those a push found done meanwhile (0 on a dry run).
    duplicate: u64,
}

/// The client `POST /v1/sync` spends its Retrieve calls with: one per process, built on the
/// first sync (a server that never syncs needs none).
fn sync_client() -> Result<&'static crate::leadsquared::Client, AppError> {
    static CLIENT: std::sync::OnceLock<crate::leadsquared::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let client = crate::leadsquared::Client::new(crate::leadsquared::ClientConfig::default())
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `POST /v1/sync?dry_run=&prune=`: the body's jobs (the forms of `POST /v1/jobs`) are the
/// desired state of the tenants they name; answers the plan (see [`crate::sync`]) and,
/// unless `dry_run`, enqueues it.
pub(super) async fn post_sync(
    State(state): State<AppState>,
    Query(q): Query<SyncQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SyncAnswer>), AppError> {
    let jobs = checked_jobs(&state, &headers, body).await?;
    let plan = match crate::sync::plan(state.queue.as_ref(), sync_client()?, jobs, q.prune).await {
        Ok(plan) => plan,
        Err(crate::sync::SyncError::Queue(e)) => return Err(e.into()),
        Err(e @ crate::sync::SyncError::UnknownTenant(_)) => {
            return Err(AppError::BadRequest(e.to_string()));
        }
        Err(e @ crate::sync::SyncError::Retrieve { .. }) => {
            return Err(AppError::Upstream(e.to_string()));
        }
    };
    let (mut enqueued, mut duplicate) = (0, 0);
    if !q.dry_run && !plan.jobs.is_empty() {
        let pushed = state.queue.push(&plan.jobs).await?;
        enqueued = pushed
            .iter()
            .filter(|p| matches!(p, Pushed::Enqueued { .. }))
            .count() as u64;
        duplicate = pushed.len() as u64 - enqueued;
        tracing::info!(enqueued, duplicate, "sync enqueued over HTTP");
    }
    let status = if q.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(SyncAnswer {
            dry_run: q.dry_run,
            tenants: plan.tenants,
            enqueued,
            duplicate,
        }),
    ))
}

/// Query of `GET /v1/dead`.
#[derive(Deserialize)]
pub(super) struct DeadQuery {
    /// Most letters to list (capped by [`ApiLimits::max_dead_listed`]).
    limit: Option<usize>,
}

/// Answer of `GET /v1/dead`.
#[derive(Serialize)]
pub(super) struct DeadList {
    /// Dead letters in all.
    total: usize,
    /// The first of them.
    jobs: Vec<JobResult>,
}

pub(super) async fn dead(
    State(state): State<AppState>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<DeadList>, AppError> {
    let mut jobs = state.queue.dead().await?;
    let total = jobs.len();
    jobs.truncate(
        q.limit
            .unwrap_or(state.limits.max_dead_listed)
            .min(state.limits.max_dead_listed),
    );
    Ok(Json(DeadList { total, jobs }))
}

/// Body of `POST /v1/dead/retry`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    /// Dead jobs to retry; all when absent.
    jobs: Option<Vec<JobId>>,
}

pub(super) async fn retry_dead(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let body = read_body(body, &state.limits)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest { jobs: None }
    } else {
        serde_json::from_slice::<RetryRequest>(&body).map_err(|e| {
            AppError::BadRequest(format!(
                "body must be {{\"jobs\": [\"<job id>\", ...]}} or empty: {e}"
            ))
        })?
    };
    let retried = state.queue.retry_dead(request.jobs.as_deref()).await?;
    tracing::info!(retried, "dead letters retried over HTTP");
    Ok(Json(serde_json::json!({ "retried": retried })))
}

/// The body, or 413 when it was over the limit.
pub(super) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limits: &ApiLimits,
) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge(limits.max_body_bytes)
        } else {
            AppError::BadRequest("the request body could not be read".into())
        }
    })
}

pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    scrape(
        state.queue.as_ref(),
        &state.metrics,
        state.limits.timeout / 2,
    )
    .await
}

pub(super) async fn worker_metrics_text(
    State((queue, metrics)): State<(Arc<dyn Queue>, Metrics)>,
) -> Response {
    scrape(queue.as_ref(), &metrics, ApiLimits::default().timeout / 2).await
}

/// Reads the queue for the gauges (for at most `wait`: half the request timeout, so the
/// scrape itself still answers), then encodes everything. A queue that cannot be read still
/// gives a scrape (the process's own counters), with `lsq_queue_status_up 0`.
///
/// What is read: one [`Queue::pulse`], bounded whatever the number of tenants (no walk
/// over them).
async fn scrape(queue: &dyn Queue, metrics: &Metrics, wait: Duration) -> Response {
    let pulse = match tokio::time::timeout(wait, queue.pulse(metrics::MAX_TENANT_LABELS)).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: queue unreadable");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: queue read timed out");
            None
        }
    };
    match tokio::time::timeout(wait, queue.replicas()).await {
        Ok(Ok(r)) => metrics.set_replicas(r.as_ref()),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: replicas unreadable"),
        Err(_) => tracing::warn!("metrics: reading the replicas timed out"),
    }
    let text = metrics.scrape(pulse.as_ref());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
