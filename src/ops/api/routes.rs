//! Which routes exist, what guards them, and the server that runs them.

use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use super::auth::require_token;
use super::errors::overload_error;
use super::handlers::{
    dead, healthz, job, job_by_key, job_list, metrics_text, not_found, openapi, post_jobs,
    post_sync, readyz, retry_dead, status, worker_metrics_text,
};
use super::{ApiLimits, AppState, steer};
use crate::ops::client_limit::PerClientLimit;
use crate::ops::metrics::Metrics;
use crate::ops::page;
use crate::queue::Queue;

/// The whole API: routes, auth on writes, body limit, overload layers.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    let per_client = PerClientLimit::per_second(limits.job_posts_per_client_per_sec);
    let writes = Router::new()
        .route("/v1/jobs", post(post_jobs).route_layer(per_client.clone()))
        .route("/v1/sync", post(post_sync).route_layer(per_client))
        .route("/v1/dead/retry", post(retry_dead))
        .route("/v1/tenants/{name}/pause", post(steer::pause_tenant))
        .route("/v1/tenants/{name}/resume", post(steer::resume_tenant))
        .route("/v1/pause", post(steer::pause_queue))
        .route("/v1/resume", post(steer::resume_queue))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page::html))
        .route("/page.js", get(page::script))
        .route("/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/jobs/by-key", get(job_by_key))
        .route("/v1/jobs/list", get(job_list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/dead", get(dead))
        .route("/v1/tenants", get(steer::tenants))
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

/// Serves `router` on `listener` until `shutdown` fires, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // The peer address is the client of `client_limit`.
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
