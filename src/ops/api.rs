//! The HTTP API for producers and ops (`serve`), and the small metrics server of a worker
//! (`worker --metrics-listen`).
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it without a
//! socket; [`serve`] runs a router on a listener until a `CancellationToken` fires. Every
//! error is an [`AppError`]: what went wrong inside is logged, and the client gets a status
//! and a short fixed message (never a Redis error, never a secret).
//!
//! Writes (`POST /v1/jobs`, `POST /v1/dead/retry`) need `Authorization: Bearer <token>`
//! with the token from `LSQ_API_TOKEN`, compared in constant time. Reads are open: they
//! show nothing secret. Overload is refused early: a concurrency limit with load shedding
//! (503 with `Retry-After` once the limit is reached) and a timeout on every request.
//! The routes and their answers are described in `openapi.json` beside this file.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use super::metrics::{self, Metrics};
use super::page;
use super::status::StatusReport;
use crate::job::{JobId, JobResult};
use crate::producer;
use crate::queue::{Pushed, Queue, QueueError};
use crate::secret::Secret;

/// The OpenAPI description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Name of the environment variable that holds the API token.
pub const TOKEN_ENV: &str = "LSQ_API_TOKEN";

/// The bearer token that writes need. Held as a [`Secret`]; compared in constant time.
#[derive(Clone, Debug)]
pub struct ApiToken(Secret);

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `LSQ_API_TOKEN` is not set or empty.
    #[error(
        "{TOKEN_ENV} is not set: serve needs a token for POST /v1/jobs and dead-letter retries"
    )]
    Missing,
    /// Too short to resist guessing.
    #[error("{TOKEN_ENV} is too short: use at least {min} characters", min = ApiToken::MIN_LEN)]
    TooShort,
}

impl ApiToken {
    /// Shortest token accepted: a token is the only thing between the internet and the
    /// queue, so a guessable one is refused at start-up.
    pub const MIN_LEN: usize = 16;

    /// Wraps a token, refusing an empty or short one.
    pub fn new(token: Secret) -> Result<Self, TokenError> {
        let t = token.expose().trim();
        if t.is_empty() {
            return Err(TokenError::Missing);
        }
        if t.len() < Self::MIN_LEN {
            return Err(TokenError::TooShort);
        }
        Ok(ApiToken(Secret::new(t)))
    }

    /// The token from `LSQ_API_TOKEN`.
    pub fn from_env() -> Result<Self, TokenError> {
        Self::new(Secret::new(std::env::var(TOKEN_ENV).unwrap_or_default()))
    }

    /// Whether `presented` is the token. Both sides are hashed first so the comparison
    /// takes the same time whatever the presented length, then compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let a = Sha256::digest(self.0.expose().as_bytes());
        let b = Sha256::digest(presented);
        a.ct_eq(&b).into()
    }
}

/// Limits that protect the server.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// Largest request body accepted, bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Most jobs in one `POST /v1/jobs`.
    pub max_jobs_per_request: usize,
    /// Requests handled at once; more are shed with 503.
    pub concurrency: usize,
    /// Longest a request may take before it is answered 503.
    pub timeout: Duration,
    /// Most dead letters `GET /v1/dead` lists in one answer.
    pub max_dead_listed: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            // A thousand jobs of about 1 KiB each, with room for custom headers.
            max_body_bytes: 2 * 1024 * 1024,
            max_jobs_per_request: 1000,
            concurrency: 256,
            timeout: Duration::from_secs(10),
            max_dead_listed: 500,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The queue.
    pub queue: Arc<dyn Queue>,
    /// This process's metrics.
    pub metrics: Metrics,
    /// The token writes need.
    pub token: ApiToken,
    /// Size and overload limits.
    pub limits: ApiLimits,
}

/// One problem with one job of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// 0-based index in a JSON array body (0 for a single object).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<usize>,
    /// 1-based line of a JSON Lines body.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<u64>,
    /// The field, e.g. `tenant` or `webhook.URL`, or `body` for the whole item.
    pub field: String,
    /// What is wrong, never quoting a secret.
    pub reason: String,
}

/// Every error a handler can answer with. Variants that wrap an internal error log it and
/// answer with a fixed message.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No or wrong bearer token: 401.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// No such job or route: 404.
    #[error("not found")]
    NotFound,
    /// The body's jobs are invalid: 400 with every field error; nothing was enqueued.
    #[error("invalid jobs")]
    Invalid(Vec<FieldError>),
    /// The request is malformed: 400 with this (safe) message.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over [`ApiLimits::max_body_bytes`]: 413.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body's `Content-Type` is not one this route reads: 415.
    #[error("Content-Type must be application/json or application/x-ndjson")]
    UnsupportedMediaType,
    /// Too many requests at once: 503 with `Retry-After`.
    #[error("server busy, try again")]
    Overloaded,
    /// The request took longer than [`ApiLimits::timeout`]: 503.
    #[error("request timed out")]
    Timeout,
    /// The queue's store did not answer: 503. The cause is logged.
    #[error("queue store unavailable")]
    Unavailable(String),
    /// Anything else: 500. The cause is logged.
    #[error("internal error")]
    Internal(String),
}

impl From<QueueError> for AppError {
    fn from(e: QueueError) -> Self {
        match e {
            e @ (QueueError::Unavailable(_) | QueueError::OutOfMemory { .. }) => {
                AppError::Unavailable(e.to_string())
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// The JSON of an error answer.
#[derive(Serialize)]
struct ErrorBody<'a> {
    /// The message.
    error: &'a str,
    /// Field errors, for 400 on jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Invalid(_) | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Overloaded | AppError::Timeout | AppError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            AppError::Unavailable(e) => tracing::warn!(error = %e, "request failed: queue store"),
            AppError::Internal(e) => tracing::error!(error = %e, "request failed"),
            _ => {}
        }
        let message = self.to_string();
        let body = ErrorBody {
            error: &message,
            errors: match &self {
                AppError::Invalid(errors) => Some(errors),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            AppError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"lsq-webhooks\""),
                );
            }
            AppError::Overloaded | AppError::Timeout | AppError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The whole API: routes, auth on writes, body limit, overload layers.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    let writes = Router::new()
        .route("/v1/jobs", post(post_jobs))
        .route("/v1/dead/retry", post(retry_dead))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page::html))
        .route("/page.js", get(page::script))
        .route("/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/dead", get(dead))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(writes)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(overload_layers!(limits))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// What a worker serves on `--metrics-listen`: `/metrics` and `/healthz`.
pub fn metrics_app(queue: Arc<dyn Queue>, metrics: Metrics) -> Router {
    let limits = ApiLimits {
        concurrency: 16,
        ..ApiLimits::default()
    };
    Router::new()
        .route("/metrics", get(worker_metrics_text))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(overload_layers!(limits))
        .with_state((queue, metrics))
}

/// Load shedding in front of a concurrency limit, and a timeout on each request. Shedding
/// answers at once when every slot is taken, instead of queueing requests without bound.
/// The limit is global (one semaphore shared by every route): `Router::layer` wraps each
/// route on its own, and a per-route limit would let N requests in per route. A macro
/// because the layered service's type is unnameable.
macro_rules! overload_layers {
    ($limits:expr) => {
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overload_error))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                $limits.concurrency,
            ))
            .timeout($limits.timeout)
    };
}
use overload_layers;

async fn overload_error(err: tower::BoxError) -> AppError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        AppError::Overloaded
    } else if err.is::<tower::timeout::error::Elapsed>() {
        AppError::Timeout
    } else {
        AppError::Internal(err.to_string())
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Refuses a request without the right bearer token, before its body is read.
async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    match presented {
        Some(token) if state.token.matches(token) => Ok(next.run(request).await),
        _ => Err(AppError::Unauthorized),
    }
}

async fn not_found() -> AppError {
    AppError::NotFound
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the store: an orchestrator's probe has its own short
/// timeout, and "slower than this" is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    tokio::time::timeout(READY_TIMEOUT, state.queue.ping())
        .await
        .map_err(|_| AppError::Unavailable("ping timed out".into()))??;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn status(State(state): State<AppState>) -> Result<Json<StatusReport>, AppError> {
    Ok(Json(StatusReport::read(state.queue.as_ref()).await?))
}

async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobResult>, AppError> {
    if id.is_empty() || id.len() > 64 {
        return Err(AppError::NotFound);
    }
    match state.queue.job(&JobId(id)).await? {
        Some(job) => Ok(Json(job)),
        None => Err(AppError::NotFound),
    }
}

/// Answer of `POST /v1/jobs`.
#[derive(Serialize)]
struct EnqueueAnswer {
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
    fn error(self, e: crate::leadsquared::FieldError) -> FieldError {
        let (index, line) = match self {
            Position::Index(i) => (Some(i), None),
            Position::Line(l) => (None, Some(l)),
        };
        FieldError {
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
        AppError::Invalid(vec![FieldError {
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

/// `POST /v1/jobs`: the validation and idempotency of `enqueue`, all or nothing.
async fn post_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EnqueueAnswer>), AppError> {
    let body = read_body(body, &state.limits)?;
    let items = split_jobs(&headers, &body)?;
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
        let checked = producer::parse_line(&text).and_then(|request| {
            let unknown = producer::check_tenant(&request.tenant, &registered);
            match (producer::validate(&request), unknown) {
                (Ok(job), None) => Ok(job),
                (Ok(_), Some(e)) => Err(vec![e]),
                (Err(mut errors), unknown) => {
                    errors.extend(unknown);
                    Err(errors)
                }
            }
        });
        match checked {
            Ok(job) => jobs.push(job),
            Err(problems) => errors.extend(problems.into_iter().map(|e| at.error(e))),
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
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

/// Query of `GET /v1/dead`.
#[derive(Deserialize)]
struct DeadQuery {
    /// Most letters to list (capped by [`ApiLimits::max_dead_listed`]).
    limit: Option<usize>,
}

/// Answer of `GET /v1/dead`.
#[derive(Serialize)]
struct DeadList {
    /// Dead letters in all.
    total: usize,
    /// The first of them.
    jobs: Vec<JobResult>,
}

async fn dead(
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

async fn retry_dead(
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
fn read_body(body: Result<Bytes, BytesRejection>, limits: &ApiLimits) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge(limits.max_body_bytes)
        } else {
            AppError::BadRequest("the request body could not be read".into())
        }
    })
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    scrape(
        state.queue.as_ref(),
        &state.metrics,
        state.limits.timeout / 2,
    )
    .await
}

async fn worker_metrics_text(
    State((queue, metrics)): State<(Arc<dyn Queue>, Metrics)>,
) -> Response {
    scrape(queue.as_ref(), &metrics, ApiLimits::default().timeout / 2).await
}

/// Reads the queue for the gauges (for at most `wait`: half the request timeout, so the
/// scrape itself still answers), then encodes everything. A queue that cannot be read still
/// gives a scrape (the process's own counters), with `lsq_queue_status_up 0`.
async fn scrape(queue: &dyn Queue, metrics: &Metrics, wait: Duration) -> Response {
    let report = match tokio::time::timeout(wait, StatusReport::read(queue)).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: queue status unreadable");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: queue status timed out");
            None
        }
    };
    let text = metrics.scrape(report.as_ref());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
