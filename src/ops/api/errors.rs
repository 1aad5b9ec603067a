//! [`AppError`]: every error a handler answers with. What went wrong inside is logged; the
//! client gets a status and a short fixed message (never a Redis error, never a secret).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::queue::QueueError;

/// One problem with one job of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProblem {
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
    Invalid(Vec<JobProblem>),
    /// The request is malformed: 400 with this (safe) message.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over [`ApiLimits::max_body_bytes`](super::ApiLimits::max_body_bytes): 413.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body's `Content-Type` is not one this route reads: 415.
    #[error("Content-Type must be application/json or application/x-ndjson")]
    UnsupportedMediaType,
    /// Too many requests at once: 503 with `Retry-After`.
    #[error("server busy, try again")]
    Overloaded,
    /// The request took longer than [`ApiLimits::timeout`](super::ApiLimits::timeout): 503.
    #[error("request timed out")]
    Timeout,
    /// The queue's store did not answer: 503. The cause is logged.
    #[error("queue store unavailable")]
    Unavailable(String),
    /// The write reached the primary but not the replicas `--min-replicas` asks for: 503
    /// with `Retry-After`, saying so (issue 16). The numbers are logged.
    #[error(
        "not acknowledged: the jobs reached the primary but too few replicas confirmed them; \
         a failover could lose them, retrying is safe"
    )]
    NotAcknowledged(String),
    /// A call to LeadSquared the request needed failed (`POST /v1/sync`'s Retrieve): 502
    /// with its reason, which never holds a key (`leadsquared::client` redacts them).
    #[error("{0}")]
    Upstream(String),
    /// Anything else: 500. The cause is logged.
    #[error("internal error")]
    Internal(String),
}

impl From<QueueError> for AppError {
    fn from(e: QueueError) -> Self {
        match e {
            e @ QueueError::NotReplicated { .. } => AppError::NotAcknowledged(e.to_string()),
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
    errors: Option<&'a [JobProblem]>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Invalid(_) | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Overloaded
            | AppError::Timeout
            | AppError::Unavailable(_)
            | AppError::NotAcknowledged(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            AppError::Unavailable(e) | AppError::NotAcknowledged(e) => {
                tracing::warn!(error = %e, "request failed: queue store")
            }
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
            AppError::Overloaded
            | AppError::Timeout
            | AppError::Unavailable(_)
            | AppError::NotAcknowledged(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Maps what the overload layers refuse with to its answer.
pub(super) async fn overload_error(err: tower::BoxError) -> AppError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        AppError::Overloaded
    } else if err.is::<tower::timeout::error::Elapsed>() {
        AppError::Timeout
    } else {
        AppError::Internal(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a push the replicas did not confirm is a 503 that says it is not
    /// acknowledged and may be retried.
    #[test]
    fn a_push_not_replicated_is_a_503_that_says_not_acknowledged() {
        let e = AppError::from(QueueError::NotReplicated {
            what: "push",
            acked: 0,
            wanted: 1,
            timeout_ms: 1000,
        });
        assert!(e.to_string().starts_with("not acknowledged"), "{e}");
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
    }
}
