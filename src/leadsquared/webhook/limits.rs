//! How large a Create body's parts may be before the job is refused at the door.
//!
//! LeadSquared publishes one size rule for Create (at most 10 custom headers, see
//! [`super::MAX_CUSTOM_HEADERS`]) and no length for any field. Without limits a 2 MB URL was
//! stored and sent, and a 20 MB one died at LeadSquared with HTTP 413 after its attempts.
//! These limits are this project's choice (`docs/decisions.md`, "Sizes of a Create body"),
//! every one configurable; the simulator does not apply them, as they are not LeadSquared's.

use super::{CreateWebhook, FieldError};

/// The size limits every job's Create body is checked against before it is enqueued.
/// Lengths are bytes of UTF-8, except the description's, which is characters (it is text a
/// person writes, in any script).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// `URL` and each of `LandingPageUrls`, in bytes. Default 2,048: the longest URL the
    /// common browsers and HTTP servers agree on, and what other webhook services accept.
    pub url: usize,
    /// `Description`, in characters. Default 1,000: it is a label, and what Retrieve's
    /// `SearchText` matches; a longer one is more likely a mistake than a description.
    pub description: usize,
    /// Each `CustomHeaders[i].Key`, in bytes. Default 256: header names are short tokens.
    pub header_key: usize,
    /// Each `CustomHeaders[i].Value`, in bytes. Default 4,096: half of the 8 KiB that
    /// common servers (nginx, Apache) allow for one request header line, so a delivery
    /// carrying it is not refused by the receiver.
    pub header_value: usize,
    /// The whole body as stored and sent (canonical JSON), in bytes. Default 65,536: ten
    /// headers at their limit, a URL and a description fit with room to spare, while a body
    /// a server would refuse with 413 does not.
    pub body: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            url: 2_048,
            description: 1_000,
            header_key: 256,
            header_value: 4_096,
            body: 65_536,
        }
    }
}

impl BodyLimits {
    /// Every limit `webhook` is over, each naming its field, its size and the option that
    /// sets the limit. Never quotes a value (header values are secrets, and a long URL is
    /// noise). `body_len` is the length of `webhook.to_json()`, which the caller has.
    pub fn check(&self, webhook: &CreateWebhook, body_len: usize) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut over = |field: String, size: usize, max: usize, unit: &str, flag: &str| {
            if size > max {
                errors.push(FieldError {
                    field,
                    reason: format!("is {size} {unit}, at most {max} allowed ({flag})"),
                });
            }
        };
        over(
            "Description".into(),
            webhook.description.chars().count(),
            self.description,
            "characters",
            "--max-description-chars",
        );
        over(
            "URL".into(),
            webhook.url.len(),
            self.url,
            "bytes",
            "--max-url-bytes",
        );
        for (i, url) in webhook.landing_page_urls.iter().flatten().enumerate() {
            over(
                format!("LandingPageUrls[{i}]"),
                url.len(),
                self.url,
                "bytes",
                "--max-url-bytes",
            );
        }
        for (i, h) in webhook.custom_headers.iter().enumerate() {
            over(
                format!("CustomHeaders[{i}].Key"),
                h.key.len(),
                self.header_key,
                "bytes",
                "--max-header-key-bytes",
            );
            over(
                format!("CustomHeaders[{i}].Value"),
                h.value.expose().len(),
                self.header_value,
                "bytes",
                "--max-header-value-bytes",
            );
        }
        over(
            "webhook".into(),
            body_len,
            self.body,
            "bytes as sent",
            "--max-webhook-bytes",
        );
        errors
    }
}
