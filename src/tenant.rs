//! A tenant is one LeadSquared account: where its API lives, its keys, and how many calls it
//! may make in any 5 seconds. The registry of tenants is loaded from a CSV file
//! (`tenant,api_base,access_key,secret_key,limit`) and kept in the queue's store.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::Secret;

/// Calls allowed per window when the tenants file leaves `limit` empty.
pub const DEFAULT_LIMIT: u32 = 25;

/// The columns of the tenants file, in order.
pub const COLUMNS: [&str; 5] = ["tenant", "api_base", "access_key", "secret_key", "limit"];

/// One LeadSquared account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The name jobs refer to it by (`"tenant"` in a job line).
    pub name: String,
    /// Scheme and host of its API, e.g. `https://api-in21.leadsquared.com`; no path.
    pub api_base: Url,
    /// `x-LSQ-AccessKey`.
    pub access_key: Secret,
    /// `x-LSQ-SecretKey`.
    pub secret_key: Secret,
    /// Calls allowed in any 5-second window.
    pub limit: u32,
}

/// A tenants file row that cannot be used; `line` is 1-based and counts the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {reason}")]
pub struct TenantRowError {
    /// Line in the file (1 is the header).
    pub line: u64,
    /// Column name, or `row` for errors about the whole row.
    pub field: String,
    /// What is wrong, never quoting a key.
    pub reason: String,
}

/// Why a tenants file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TenantsFileError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more rows are invalid; nothing from the file should be used.
    #[error("{path}: {} invalid row(s):\n{}", .errors.len(), .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: String,
        /// Every invalid row, in file order.
        errors: Vec<TenantRowError>,
    },
}

/// Checks an API base: absolute, no path/query, https, or plain http only to a loopback
/// address (a local simulator). LeadSquared refuses plain HTTP.
pub fn parse_api_base(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err("must be scheme and host only, e.g. https://api-in21.leadsquared.com".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => {
            Err("plain http is only allowed to a loopback address (a simulator); use https".into())
        }
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

/// Whether a URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Whether a tenant name is usable: 1 to 128 characters of `[A-Za-z0-9._-]` (it becomes part
/// of Redis keys and metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads a tenants file. Every row is checked; if any is invalid, all errors are returned
/// and no tenant is, so an import is all or nothing.
pub fn read_file(path: &Path) -> Result<Vec<Tenant>, TenantsFileError> {
    let display = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| TenantsFileError::Io {
        path: display.clone(),
        source,
    })?;
    parse(&data).map_err(|errors| TenantsFileError::Invalid {
        path: display,
        errors,
    })
}

/// Parses tenants CSV text (with header). See [`read_file`].
pub fn parse(data: &[u8]) -> Result<Vec<Tenant>, Vec<TenantRowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data);
    let mut errors = Vec::new();
    let row_error = |line: u64, field: &str, reason: String| TenantRowError {
        line,
        field: field.to_string(),
        reason,
    };
    match reader.headers() {
        Ok(h) => {
            let got: Vec<&str> = h.iter().collect();
            let required = &COLUMNS[..4];
            if got.as_slice() != COLUMNS && got.as_slice() != required {
                errors.push(row_error(
                    1,
                    "header",
                    format!(
                        "expected columns {} (limit optional), found {}",
                        COLUMNS.join(","),
                        got.join(",")
                    ),
                ));
                return Err(errors);
            }
        }
        Err(e) => return Err(vec![row_error(1, "header", e.to_string())]),
    }
    let mut tenants: Vec<Tenant> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(row_error(line, "row", e.to_string()));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() > COLUMNS.len() {
            errors.push(row_error(
                line,
                "row",
                format!(
                    "{} columns, expected at most {}",
                    record.len(),
                    COLUMNS.len()
                ),
            ));
            continue;
        }
        if record.len() < 4 {
            errors.push(row_error(
                line,
                "row",
                format!("{} columns, expected at least 4", record.len()),
            ));
            continue;
        }
        let before = errors.len();
        let name = record.get(0).unwrap_or_default();
        if !valid_name(name) {
            errors.push(row_error(
                line,
                "tenant",
                "must be 1-128 characters of letters, digits, '.', '_' or '-'".into(),
            ));
        } else if let Some(first) = seen.insert(name.to_string(), line) {
            errors.push(row_error(
                line,
                "tenant",
                format!("{name:?} is already defined on line {first}"),
            ));
        }
        let api_base = parse_api_base(record.get(1).unwrap_or_default())
            .map_err(|reason| errors.push(row_error(line, "api_base", reason)))
            .ok();
        let access_key = record.get(2).unwrap_or_default();
        if access_key.is_empty() {
            errors.push(row_error(line, "access_key", "is empty".into()));
        }
        let secret_key = record.get(3).unwrap_or_default();
        if secret_key.is_empty() {
            errors.push(row_error(line, "secret_key", "is empty".into()));
        }
        let limit = match record.get(4).unwrap_or_default() {
            "" => DEFAULT_LIMIT,
            raw => match raw.parse::<u32>() {
                Ok(n) if (1..=10_000).contains(&n) => n,
                _ => {
                    errors.push(row_error(
                        line,
                        "limit",
                        format!("{raw:?} is not a whole number from 1 to 10000"),
                    ));
                    0
                }
            },
        };
        if let (true, Some(api_base)) = (errors.len() == before, api_base) {
            tenants.push(Tenant {
                name: name.to_string(),
                api_base,
                access_key: Secret::new(access_key),
                secret_key: Secret::new(secret_key),
                limit,
            });
        }
    }
    if errors.is_empty() {
        Ok(tenants)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_with_and_without_limit() {
        let csv = "tenant,api_base,access_key,secret_key,limit\n\
                   acme,https://api-in21.leadsquared.com,ak1,sk1,10\n\
                   beta,http://127.0.0.1:8080,ak2,sk2,\n";
        let t = parse(csv.as_bytes()).expect("valid");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].limit, 10);
        assert_eq!(t[1].limit, DEFAULT_LIMIT);
        assert_eq!(t[1].api_base.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn reports_every_bad_row_with_line_and_field_and_no_secret() {
        let csv = "tenant,api_base,access_key,secret_key,limit\n\
                   acme,http://example.com,ak1,sk-secret-1,10\n\
                   bad name,https://x.leadsquared.com,ak2,sk-secret-2,0\n\
                   acme,https://x.leadsquared.com,ak3,sk-secret-3,5,extra\n";
        let errs = parse(csv.as_bytes()).expect_err("invalid");
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text[0].starts_with("line 2: api_base: plain http"),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("line 3: tenant:")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("line 3: limit:")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("line 4: row: 6 columns")),
            "{text:?}"
        );
        assert!(!text.join("\n").contains("sk-secret"));
    }

    #[test]
    fn refuses_wrong_header() {
        let errs = parse(b"name,url\nacme,https://x\n").expect_err("invalid");
        assert_eq!(errs[0].line, 1);
        assert_eq!(errs[0].field, "header");
    }
}
