//! What ops see and steer: the status report (`status`, `GET /v1/status`), Prometheus
//! metrics (`/metrics` of `serve` and of `worker --metrics-listen`), the HTTP API for
//! producers and ops, and the status page.
//!
//! - [`status`]: one read of the queue turned into the stable status JSON and the table.
//! - [`metrics`]: the Prometheus registry: job outcomes, LeadSquared answers and latency,
//!   queue depth, throttled tenants (bounded labels).
//! - [`api`]: the axum router (`app`), its one error type, auth, overload layers, and the
//!   small router a worker serves its metrics with. Its OpenAPI description is
//!   `openapi.json` beside it, served at `/openapi.json`.
//! - [`client_limit`]: the per-client rate limit on `POST /v1/jobs` (429 with
//!   `Retry-After`).
//! - [`page`]: the self-refreshing status page (`page.html` and `page.js` beside it).

pub mod api;
pub mod client_limit;
pub mod metrics;
pub mod page;
pub mod status;

pub use api::{ApiLimits, ApiToken, AppError, AppState, app, metrics_app, serve};
pub use metrics::{JobOutcome, Metrics};
pub use status::{StatusReport, TenantReport, TenantState};
