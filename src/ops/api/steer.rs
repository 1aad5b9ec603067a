//! The routes that show every tenant and steer the queue (issue 15): `GET /v1/tenants` (one
//! page of the tenants view), and, with the token, pausing and resuming a tenant
//! (`POST /v1/tenants/{name}/pause|resume`) or the whole queue (`POST /v1/pause|resume`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::handlers::read_body;
use super::{AppError, AppState};
use crate::queue::{
    HoldKind, NewHold, QueueError, QueuePause, TenantHold, TenantPage, TenantQuery, TenantSort,
    TenantState,
};

/// Query of `GET /v1/tenants`.
#[derive(Deserialize)]
pub(super) struct TenantsQuery {
    sort: Option<String>,
    filter: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/tenants?sort=name|waiting|done|dead&filter=STATE&cursor=C&limit=N`: one page
/// of the tenants view (`Queue::tenants_page`), at most 500 rows, never the whole set.
pub(super) async fn tenants(
    State(state): State<AppState>,
    Query(q): Query<TenantsQuery>,
) -> Result<Json<TenantPage>, AppError> {
    let bad = |e: QueueError| match e {
        QueueError::Config(reason) => AppError::BadRequest(reason),
        other => other.into(),
    };
    let sort = match q.sort.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => TenantSort::parse(s).map_err(bad)?,
        None => TenantSort::Name,
    };
    let filter = match q.filter.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(TenantState::parse(s).map_err(bad)?),
        None => None,
    };
    if q.cursor.as_ref().is_some_and(|c| c.len() > 20) {
        return Err(AppError::BadRequest(
            "cursor is not one this server gave".into(),
        ));
    }
    let query = TenantQuery {
        sort,
        filter,
        cursor: q.cursor,
        limit: q.limit.unwrap_or(50),
    };
    match state.queue.tenants_page(&query).await {
        Ok(page) => Ok(Json(page)),
        Err(QueueError::Config(_)) => Err(AppError::BadRequest(
            "cursor is not one this server gave".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Body of the pause routes, all optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    /// Why (shown by status and the page).
    reason: Option<String>,
    /// Who (shown with the reason); `api` when not given.
    by: Option<String>,
}

/// Longest reason or name of who paused, bytes: what status and the page show in a line.
const MAX_PAUSE_TEXT: usize = 200;

impl PauseRequest {
    /// The body read: empty is all defaults.
    fn read(body: &[u8]) -> Result<Self, AppError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(PauseRequest::default());
        }
        let request: PauseRequest = serde_json::from_slice(body).map_err(|e| {
            AppError::BadRequest(format!(
                "body must be {{\"reason\": \"...\", \"by\": \"...\"}} (both optional) or empty: {e}"
            ))
        })?;
        for (field, text) in [("reason", &request.reason), ("by", &request.by)] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_PAUSE_TEXT) {
                return Err(AppError::BadRequest(format!(
                    "{field}: at most {MAX_PAUSE_TEXT} bytes"
                )));
            }
            // One line: status prints it in a table row.
            if text
                .as_ref()
                .is_some_and(|t| t.chars().any(char::is_control))
            {
                return Err(AppError::BadRequest(format!(
                    "{field}: no control characters (one line of text)"
                )));
            }
        }
        Ok(request)
    }

    fn reason(&self) -> String {
        self.reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "paused by an operator".into())
    }

    fn by(&self) -> String {
        self.by
            .clone()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "api".into())
    }
}

/// A registered tenant's name, or 404.
async fn registered(state: &AppState, name: &str) -> Result<(), AppError> {
    if name.is_empty() || name.len() > 200 || state.queue.tenant(name).await?.is_none() {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// `POST /v1/tenants/{name}/pause`: holds the tenant as `tenants pause` does.
pub(super) async fn pause_tenant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let request = PauseRequest::read(&read_body(body, &state.limits)?)?;
    registered(&state, &name).await?;
    let hold = NewHold {
        kind: HoldKind::Paused,
        reason: request.reason(),
        length: None,
        by: Some(request.by()),
    };
    state.queue.hold(&name, hold).await?;
    let held = state.queue.tenant_hold(&name).await?;
    tracing::info!(tenant = %name, "tenant paused over HTTP");
    Ok(Json(serde_json::json!({ "tenant": name, "hold": held })))
}

/// `POST /v1/tenants/{name}/resume`: ends the tenant's hold as `tenants resume` does.
pub(super) async fn resume_tenant(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    registered(&state, &name).await?;
    let ended: Option<TenantHold> = state.queue.release(&name).await?;
    tracing::info!(tenant = %name, "tenant resumed over HTTP");
    Ok(Json(serde_json::json!({ "tenant": name, "ended": ended })))
}

/// `POST /v1/pause`: pauses the whole queue as `lsq-webhooks pause` does.
pub(super) async fn pause_queue(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let request = PauseRequest::read(&read_body(body, &state.limits)?)?;
    let paused: QueuePause = state
        .queue
        .pause_queue(&request.reason(), Some(&request.by()))
        .await?;
    tracing::info!("queue paused over HTTP");
    Ok(Json(serde_json::json!({ "paused": paused })))
}

/// `POST /v1/resume`: resumes the queue.
pub(super) async fn resume_queue(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    let ended = state.queue.resume_queue().await?;
    tracing::info!("queue resumed over HTTP");
    Ok(Json(serde_json::json!({ "ended": ended })))
}
