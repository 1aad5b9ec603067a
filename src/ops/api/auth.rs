//! Writes need `Authorization: Bearer <token>`: the token, and the middleware that checks
//! it before a body is read.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppError, AppState};
use crate::secret::Secret;

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

/// Refuses a request without the right bearer token, before its body is read.
pub(super) async fn require_token(
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
