//! Every LeadSquared answer, classified: usable (the JSON it carried), rate limited,
//! transient, or permanent.
//!
//! [`classify`] is a pure function of status, headers and body, so the same rules apply to
//! every call and can be read in one place. The rules, from LeadSquared's documentation and
//! from what public client code has seen:
//! - rate limited: 429, or any status whose body says `MXAPIRateLimitExceededException`
//!   (LeadSquared has answered 200 with `Status: Error`, and 403, for it), or whose message
//!   says "API calls exceeded the limit of N in W second(s)";
//! - refused: 401 (bad keys, or another region's host: the worker asks which);
//! - permanent: 400, 404 and other 4xx, a 500 carrying an `MX...Exception` (LeadSquared
//!   answers input errors that way; retrying repeats them), a 2xx with `Status: Error`, and a
//!   redirect (never followed: it would carry the keys elsewhere);
//! - transient: a 500 without an `MX` exception, 502/503/504 and every other 5xx, 408, and a
//!   2xx whose body is not JSON; all may have reached LeadSquared.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

/// The exception type LeadSquared names a rate limit with.
pub const RATE_LIMIT_EXCEPTION: &str = "MXAPIRateLimitExceededException";

/// The exception type taken to mean "no webhook with that Id" on Update and Delete.
/// LeadSquared documents none; the simulator answers this one with a 404 (an assumption,
/// see `docs/decisions.md`, issue 18). [`is_not_found`] also accepts any `...NotFound...`
/// exception type but the unknown-API one.
pub const NOT_FOUND_EXCEPTION: &str = "MXWebhookNotFoundException";

/// The exception LeadSquared answers an unknown API path with: not "no such webhook".
const API_NOT_FOUND_EXCEPTION: &str = "MXAPINotFoundException";

/// Whether an Update's or Delete's error says the webhook does not exist: a permanent
/// error naming an exception type that contains `NotFound` (but not the unknown-API one,
/// which means the call itself is wrong and must stay an error).
pub fn is_not_found(e: &CallError) -> bool {
    let CallError::Permanent { reason } = e else {
        return false;
    };
    let exception = reason.split(':').next().unwrap_or_default().trim();
    exception.starts_with("MX")
        && exception.contains("NotFound")
        && !exception.eq_ignore_ascii_case(API_NOT_FOUND_EXCEPTION)
}

/// LeadSquared's rate-limit window.
pub const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(5);

/// The longest `Retry-After` honoured; a longer one is cut to this (a day is LeadSquared's
/// longest quota period).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Longest reason text kept from an answer.
const MAX_REASON_CHARS: usize = 400;

/// A quota LeadSquared named in a rate-limit answer: at most `calls` in `window`, a window
/// longer than the 5-second one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Calls allowed in the window.
    pub calls: u32,
    /// The window, e.g. 86,400 s for a daily quota.
    pub window: Duration,
}

/// Why a call did not produce what was asked, and what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// LeadSquared refused the call for the account's rate limit (or quota). Nothing was
    /// done: retry after `retry_after` (or the 5-second window) without spending an attempt.
    #[error("rate limited: {reason}")]
    RateLimited {
        /// From a `Retry-After` header, or from the message when it names a window longer
        /// than LeadSquared's 5 seconds (a daily quota); `None` means "the 5-second window".
        retry_after: Option<Duration>,
        /// The account's real limit per 5 seconds when the message names it
        /// ("API calls exceeded the limit of 20 in 5 second(s)" gives 20).
        limit: Option<u32>,
        /// A quota over a window longer than 5 seconds, when the message names one ("API
        /// calls exceeded the limit of 10000 in 86400 second(s)": a daily quota).
        quota: Option<Quota>,
        /// LeadSquared's words, or the status line.
        reason: String,
    },
    /// Might work later: retry with backoff.
    #[error("transient: {reason}")]
    Transient {
        /// What happened (never a key or a custom header value).
        reason: String,
        /// Whether the request may have been processed: a 5xx, a timeout or a reset after the
        /// request was sent. Before creating again, look for the webhook with Retrieve.
        maybe_reached: bool,
    },
    /// HTTP 401: LeadSquared refused the keys, or the host is another region's (which
    /// answers 401 to every call but `UserByAccessKey.Get`). A question about the tenant,
    /// not the job: the worker asks `UserByAccessKey.Get` which it is.
    #[error("{reason}")]
    Refused {
        /// What LeadSquared said, or the status line.
        reason: String,
    },
    /// The host did not answer: connection refused, a DNS or TLS failure, a connect
    /// timeout. The request never reached LeadSquared; a question about the tenant's host,
    /// not the job.
    #[error("unreachable: {reason}")]
    Unreachable {
        /// What failed.
        reason: String,
    },
    /// The request was sent and no answer came within the call's timeout. It may have been
    /// processed, as [`CallError::Transient`] with `maybe_reached`, so the next attempt
    /// reconciles; and a host that keeps timing out is not answering, as
    /// [`CallError::Unreachable`], so it counts against the tenant's host, and a timeout in a
    /// run of the tenant's host failures spends no attempt of the job.
    #[error("timed out: {reason}")]
    TimedOut {
        /// What timed out.
        reason: String,
    },
    /// Will fail again the same way: give up. For LeadSquared's errors the reason is
    /// `ExceptionType: ExceptionMessage`.
    #[error("{reason}")]
    Permanent {
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// Whether the request may have changed something at LeadSquared.
    pub fn maybe_reached(&self) -> bool {
        matches!(
            self,
            CallError::Transient {
                maybe_reached: true,
                ..
            } | CallError::TimedOut { .. }
        )
    }

    /// The reason text, whatever the kind.
    pub fn reason(&self) -> &str {
        match self {
            CallError::RateLimited { reason, .. }
            | CallError::Transient { reason, .. }
            | CallError::Refused { reason }
            | CallError::Unreachable { reason }
            | CallError::TimedOut { reason }
            | CallError::Permanent { reason } => reason,
        }
    }

    /// The HTTP status of the answer this error came from, as [`classify`] names it in the
    /// reason (`HTTP 503 Service Unavailable...`); `None` for a transport failure (timeout,
    /// reset), and for LeadSquared's own errors whose reason is its exception.
    pub fn http_status(&self) -> Option<u16> {
        let reason = self.reason();
        let at = reason.find("HTTP ")?;
        let digits: String = reason[at + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().filter(|code| (100..600).contains(code))
    }

    /// LeadSquared's `ExceptionType`, when the answer named one ([`classify`] puts it
    /// first: `MXDuplicateEntryException: ...`).
    pub fn exception_type(&self) -> Option<&str> {
        let reason = self.reason();
        let reason = reason
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("HTTP "))
            .map_or(reason, |(_, rest)| rest);
        let word = reason.split([':', ' ']).next()?;
        (word.ends_with("Exception")
            && word.len() > "Exception".len()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .then_some(word)
    }

    /// The same error with every occurrence of the given secrets in its reason replaced by
    /// `***` (an answer may echo a key or a header value back).
    pub fn redacted(mut self, secrets: &[&str]) -> Self {
        let reason = match &mut self {
            CallError::RateLimited { reason, .. }
            | CallError::Transient { reason, .. }
            | CallError::Refused { reason }
            | CallError::Unreachable { reason }
            | CallError::TimedOut { reason }
            | CallError::Permanent { reason } => reason,
        };
        *reason = redact(reason, secrets);
        self
    }
}

/// Replaces each secret (of 4 characters or more: shorter ones would mangle ordinary words
/// and reveal little) with `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 && out.contains(s) {
            out = out.replace(s, "***");
        }
    }
    out
}

/// Classifies an answer at the current time (used only to turn a `Retry-After` date into a
/// duration). See [`classify_at`].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Value, CallError> {
    classify_at(status, headers, body, SystemTime::now())
}

/// Classifies an answer. `Ok` holds the JSON of a 2xx answer that is not an error; what it
/// must contain depends on the call (Create's `Message.Id`, Retrieve's `Response`).
pub fn classify_at(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Value, CallError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let obj = json.as_ref().and_then(Value::as_object);
    let text = |k: &str| {
        obj.and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let exception = text("ExceptionType");
    let message = text("ExceptionMessage").or_else(|| text("Message"));
    let said_error = text("Status").is_some_and(|s| s.eq_ignore_ascii_case("error"));
    let lsq_reason = match (exception, message) {
        (Some(t), Some(m)) => Some(format!("{t}: {m}")),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(m)) if said_error || !status.is_success() => Some(m.to_string()),
        _ => None,
    }
    .map(|r| clean(&r));
    let status_line = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string();

    // Only "API calls exceeded the limit of ..." counts: a validation message may also say
    // "limit of 10" (custom headers) and must stay permanent.
    let says_rate_limit = message.is_some_and(|m| {
        m.to_ascii_lowercase()
            .contains("calls exceeded the limit of")
    });
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || exception.is_some_and(|t| t.eq_ignore_ascii_case(RATE_LIMIT_EXCEPTION))
        || says_rate_limit;
    if rate_limited {
        let window = message.and_then(parse_limit);
        let header = retry_after(headers, now);
        let (limit, quota, retry_after) = match window {
            Some((n, w)) if w == RATE_LIMIT_WINDOW => (Some(n), None, header),
            // A longer window is a quota: its number is not a per-5-second limit, and without
            // a header the safe wait is the window itself.
            Some((n, w)) => (
                None,
                Some(Quota {
                    calls: n,
                    window: w,
                }),
                header.or(Some(w.min(MAX_RETRY_AFTER))),
            ),
            None => (None, None, header),
        };
        return Err(CallError::RateLimited {
            retry_after,
            limit,
            quota,
            reason: lsq_reason.unwrap_or(status_line),
        });
    }

    if status.is_success() {
        if said_error || exception.is_some() {
            return Err(CallError::Permanent {
                reason: lsq_reason
                    .unwrap_or_else(|| format!("{status_line} with Status \"Error\"")),
            });
        }
        return match json {
            Some(v) => Ok(v),
            None => Err(CallError::Transient {
                reason: format!(
                    "{status_line} but the answer is not JSON ({} bytes)",
                    body.len()
                ),
                maybe_reached: true,
            }),
        };
    }

    let with_reason = |prefix: &str| match &lsq_reason {
        Some(r) => format!("{prefix}: {r}"),
        None => prefix.to_string(),
    };
    let code = status.as_u16();
    if status.is_server_error() {
        let validation = exception.is_some_and(|t| t.starts_with("MX") && t.ends_with("Exception"));
        if code == 500 && validation {
            return Err(CallError::Permanent {
                reason: lsq_reason.unwrap_or(status_line),
            });
        }
        return Err(CallError::Transient {
            reason: with_reason(&status_line),
            maybe_reached: true,
        });
    }
    match code {
        // The server gave up waiting for the request: it was not processed.
        408 => Err(CallError::Transient {
            reason: with_reason(&status_line),
            maybe_reached: false,
        }),
        401 => Err(CallError::Refused {
            reason: lsq_reason.unwrap_or_else(|| {
                format!(
                    "{status_line}: LeadSquared refused the access/secret key (or the \
                     tenant's api_base is another region's host)"
                )
            }),
        }),
        400..=499 => Err(CallError::Permanent {
            reason: lsq_reason.unwrap_or_else(|| match code {
                404 => format!("{status_line}: no such API at this api_base"),
                _ => status_line.clone(),
            }),
        }),
        300..=399 => Err(CallError::Permanent {
            reason: format!(
                "{status_line}: unexpected redirect, not followed (check the tenant's api_base)"
            ),
        }),
        _ => Err(CallError::Transient {
            reason: with_reason(&status_line),
            maybe_reached: true,
        }),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(raw).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Finds "limit of N in W <unit>" in a message: the limit and its window.
pub fn parse_limit(message: &str) -> Option<(u32, Duration)> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("limit of ")? + "limit of ".len();
    let rest = &lower[at..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let limit: u32 = digits.parse().ok()?;
    let rest = rest[digits.len()..].trim_start();
    let Some(rest) = rest.strip_prefix("in ") else {
        return Some((limit, RATE_LIMIT_WINDOW));
    };
    let rest = rest.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let count: u64 = digits.parse().ok()?;
    let unit = rest[digits.len()..].trim_start();
    let secs = if unit.starts_with("sec") {
        count
    } else if unit.starts_with("min") {
        count * 60
    } else if unit.starts_with("hour") {
        count * 3600
    } else if unit.starts_with("day") {
        count * 86_400
    } else {
        return Some((limit, RATE_LIMIT_WINDOW));
    };
    Some((limit, Duration::from_secs(secs)))
}

/// A reason fit for a log line: control characters removed, at most 400 characters.
fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    if s.chars().count() > MAX_REASON_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_http_status_and_exception_type_are_read_back_from_the_reason() {
        let no_headers = HeaderMap::new();
        let lsq = br#"{"Status":"Error","ExceptionType":"MXDuplicateEntryException","ExceptionMessage":"A webhook with this URL exists"}"#;
        let e = classify(StatusCode::BAD_REQUEST, &no_headers, lsq).expect_err("an error");
        assert_eq!(e.exception_type(), Some("MXDuplicateEntryException"));
        let e = classify(StatusCode::SERVICE_UNAVAILABLE, &no_headers, b"down").expect_err("503");
        assert_eq!((e.http_status(), e.exception_type()), (Some(503), None));
        let e = classify(
            StatusCode::INTERNAL_SERVER_ERROR,
            &no_headers,
            br#"{"ExceptionType":"SomeServerException","ExceptionMessage":"boom"}"#,
        )
        .expect_err("500");
        assert_eq!(e.http_status(), Some(500));
        assert_eq!(e.exception_type(), Some("SomeServerException"));
        let e = classify(StatusCode::UNAUTHORIZED, &no_headers, b"").expect_err("401");
        assert_eq!((e.http_status(), e.exception_type()), (Some(401), None));
        let t = CallError::Transient {
            reason: "timed out after 30 s".into(),
            maybe_reached: true,
        };
        assert_eq!((t.http_status(), t.exception_type()), (None, None));
    }

    use super::*;

    #[test]
    fn parses_limits_and_windows() {
        assert_eq!(
            parse_limit("API calls exceeded the limit of 20 in 5 second(s)"),
            Some((20, Duration::from_secs(5)))
        );
        assert_eq!(
            parse_limit("API calls exceeded the limit of 10000 in 1 day(s)"),
            Some((10000, Duration::from_secs(86_400)))
        );
        assert_eq!(parse_limit("no number here"), None);
        assert_eq!(parse_limit("limit of x"), None);
    }

    #[test]
    fn retry_after_as_http_date_is_relative_to_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:30 GMT")
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let e = classify_at(StatusCode::TOO_MANY_REQUESTS, &h, b"", now);
        assert_eq!(
            e,
            Err(CallError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                limit: None,
                quota: None,
                reason: "HTTP 429 Too Many Requests".into()
            })
        );
    }

    #[test]
    fn a_daily_quota_is_not_a_five_second_limit() {
        let body = br#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 10000 in 1 day(s)"}"#;
        match classify(StatusCode::OK, &HeaderMap::new(), body) {
            Err(CallError::RateLimited {
                retry_after,
                limit,
                quota,
                ..
            }) => {
                assert_eq!(limit, None);
                assert_eq!(retry_after, Some(Duration::from_secs(86_400)));
                assert_eq!(
                    quota,
                    Some(Quota {
                        calls: 10_000,
                        window: Duration::from_secs(86_400)
                    })
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redaction_hides_secrets_in_reasons() {
        let e = CallError::Permanent {
            reason: "MXInvalidInputException: bad key sk-12345".into(),
        }
        .redacted(&["sk-12345", "ab"]);
        assert_eq!(e.reason(), "MXInvalidInputException: bad key ***");
    }
}
