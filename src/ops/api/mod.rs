//! The HTTP API for producers and ops (`serve`), and the small metrics server of a worker
//! (`worker --metrics-listen`).
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it without a
//! socket; [`serve`] runs a router on a listener until a `CancellationToken` fires. Every
//! error is an [`AppError`]: what went wrong inside is logged, and the client gets a status
//! and a short fixed message (never a Redis error, never a secret).
//!
//! Writes (`POST /v1/jobs`, `POST /v1/dead/retry`, the pause and resume routes) need `Authorization: Bearer <token>`
//! with the token from `LSQ_API_TOKEN`, compared in constant time. Reads are open: they
//! show nothing secret. Overload is refused early: a concurrency limit with load shedding
//! (503 with `Retry-After` once the limit is reached) and a timeout on every request.
//! The routes and their answers are described in `ops/openapi.json`.
//!
//! - `auth.rs`: the [`ApiToken`] and the middleware that checks it on writes;
//! - `errors.rs`: [`AppError`], the one error every handler answers with, and its response;
//! - `routes.rs`: [`app`] and [`metrics_app`], which routes exist and the layers around them,
//!   and [`serve`];
//! - `handlers.rs`: one function per route;
//! - `steer.rs`: the tenants view and the pause routes (a tenant, the whole queue).

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use crate::queue::Queue;

mod auth;
mod errors;
mod handlers;
mod routes;
mod steer;

pub use auth::{ApiToken, TOKEN_ENV, TokenError};
pub use errors::{AppError, JobProblem};
pub use routes::{app, metrics_app, serve};

/// The OpenAPI description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

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
    /// `POST /v1/jobs` a second per client (burst as many) before 429; 0: no limit.
    pub job_posts_per_client_per_sec: u32,
    /// How large each part of a job's Create body may be (checked as `enqueue` does).
    pub webhook: crate::leadsquared::BodyLimits,
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
            job_posts_per_client_per_sec: super::client_limit::DEFAULT_PER_SEC,
            webhook: crate::leadsquared::BodyLimits::default(),
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
