//! The status page at `/`: static HTML and a script that polls `/v1/status` and
//! `/v1/dead` every two seconds and draws queue totals, a throughput chart (inline SVG),
//! throttled tenants and the dead letters with a retry button that asks for the API token.
//!
//! Both assets are compiled in, so the binary is the whole deployment. The script sets
//! text with `textContent` only (dead-letter reasons come from LeadSquared and are not
//! trusted as HTML), and the page is served under a Content-Security-Policy that allows
//! scripts from this origin only.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page's HTML.
pub const HTML: &str = include_str!("page.html");

/// The page's script, served at `/page.js`.
pub const SCRIPT: &str = include_str!("page.js");

/// Headers every page response carries: no inline script, no framing, no sniffing, and
/// no caching (the numbers change every second; the assets are tiny).
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

/// `GET /`.
pub async fn html() -> Response {
    (
        PAGE_HEADERS,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        HTML,
    )
        .into_response()
}

/// `GET /page.js`.
pub async fn script() -> Response {
    (
        PAGE_HEADERS,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}
