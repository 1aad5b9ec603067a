//! A tenant is one LeadSquared account: where its API lives, its keys, and how many calls it
//! may make in any 5 seconds, how many of those it leaves to the account's other integrations,
//! and how many calls it may make per day. The registry of tenants is loaded from a CSV file
//! (`tenant,api_base,access_key,secret_key[,limit][,reserve][,daily_limit]`, columns found by
//! the header, in any order) and kept in the queue's store.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::Secret;

/// Calls allowed per window when the tenants file leaves `limit` empty.
pub const DEFAULT_LIMIT: u32 = 25;

/// The columns every tenants file has (in any order).
pub const REQUIRED_COLUMNS: [&str; 4] = ["tenant", "api_base", "access_key", "secret_key"];

/// The columns a tenants file may add (in any order).
pub const OPTIONAL_COLUMNS: [&str; 3] = ["limit", "reserve", "daily_limit"];

/// Largest `daily_limit` accepted: far above any LeadSquared plan, so a typo with extra
/// digits is caught rather than taken as "no quota".
pub const MAX_DAILY_LIMIT: u32 = 100_000_000;

/// One LeadSquared account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The name jobs refer to it by (`"tenant"` in a job line).
    pub name: String,
    /// Scheme and host of its API, e.g. `https://api-in21.leadsquared.com`; no path. `None`
    /// until it is discovered (an empty `api_base` in the tenants file): the worker, or
    /// `tenants import --discover`, asks LeadSquared's `UserByAccessKey.Get` for it.
    #[serde(default)]
    pub api_base: Option<Url>,
    /// `x-LSQ-AccessKey`.
    pub access_key: Secret,
    /// `x-LSQ-SecretKey`.
    pub secret_key: Secret,
    /// Calls allowed in any 5-second window.
    pub limit: u32,
    /// Calls per window this product leaves unused for the tenant's other integrations
    /// (0 to `limit - 1`): the queue makes at most `limit - reserve` calls in any window.
    #[serde(default)]
    pub reserve: u32,
    /// Calls allowed per day (UTC day unless the queue is configured otherwise); `None`: no
    /// quota known.
    #[serde(default)]
    pub daily_limit: Option<u32>,
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

/// The API base named by `UserByAccessKey.Get`'s `LSQCommonServiceURLs.api`: documented as
/// a host name (`api-in21.leadsquared.com`, given `https://`), accepted as a full URL too.
/// The result passes [`parse_api_base`] (plain http only to loopback).
pub fn api_base_from_host(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("LSQCommonServiceURLs.api is empty".into());
    }
    let full = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{}", raw.trim_end_matches('/'))
    };
    parse_api_base(&full)
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
    read_file_with(path, 0)
}

/// Reads a tenants file, `default_reserve` for rows that give no `reserve` (see
/// [`parse_with`]).
pub fn read_file_with(path: &Path, default_reserve: u32) -> Result<Vec<Tenant>, TenantsFileError> {
    let display = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| TenantsFileError::Io {
        path: display.clone(),
        source,
    })?;
    parse_with(&data, default_reserve).map_err(|errors| TenantsFileError::Invalid {
        path: display,
        errors,
    })
}

/// Parses tenants CSV text (with header), with no default reserve. See [`read_file`].
pub fn parse(data: &[u8]) -> Result<Vec<Tenant>, Vec<TenantRowError>> {
    parse_with(data, 0)
}

/// Where each column of a tenants file is, found by its header.
struct Layout {
    /// Index of each of [`REQUIRED_COLUMNS`], in that order.
    required: [usize; 4],
    /// Index of each of [`OPTIONAL_COLUMNS`] the file has, in that order.
    optional: [Option<usize>; 3],
    /// Number of columns in the header.
    len: usize,
}

impl Layout {
    /// Reads the header: every column known, none twice, every required one present.
    fn of(header: &csv::StringRecord) -> Result<Layout, String> {
        let mut required = [None; 4];
        let mut optional = [None; 3];
        for (i, name) in header.iter().enumerate() {
            let slot = if let Some(k) = REQUIRED_COLUMNS.iter().position(|c| *c == name) {
                &mut required[k]
            } else if let Some(k) = OPTIONAL_COLUMNS.iter().position(|c| *c == name) {
                &mut optional[k]
            } else {
                return Err(format!(
                    "unknown column {name:?}; the columns are {} and optionally {}",
                    REQUIRED_COLUMNS.join(","),
                    OPTIONAL_COLUMNS.join(",")
                ));
            };
            if slot.replace(i).is_some() {
                return Err(format!("column {name:?} appears twice"));
            }
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .zip(required)
            .filter(|(_, at)| at.is_none())
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing column(s) {}", missing.join(",")));
        }
        Ok(Layout {
            required: required.map(|at| at.unwrap_or_default()),
            optional,
            len: header.len(),
        })
    }

    /// Fewest fields a row may have: up to the last required column (optional columns
    /// left off at the end of a row are empty).
    fn min_len(&self) -> usize {
        self.required.iter().max().map_or(0, |i| i + 1)
    }
}

/// A whole number in `range`, or why not.
fn whole_number(raw: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    match raw.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{raw:?} is not a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// Parses tenants CSV text (with header). A row that leaves `reserve` empty (or a file
/// without the column) gets `default_reserve` (`--reserve`, `LSQ_RESERVE`). See
/// [`read_file`].
pub fn parse_with(data: &[u8], default_reserve: u32) -> Result<Vec<Tenant>, Vec<TenantRowError>> {
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
    let layout = match reader.headers() {
        Ok(h) => match Layout::of(h) {
            Ok(layout) => layout,
            Err(reason) => return Err(vec![row_error(1, "header", reason)]),
        },
        Err(e) => return Err(vec![row_error(1, "header", e.to_string())]),
    };
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
        if record.len() > layout.len {
            errors.push(row_error(
                line,
                "row",
                format!("{} columns, expected at most {}", record.len(), layout.len),
            ));
            continue;
        }
        if record.len() < layout.min_len() {
            errors.push(row_error(
                line,
                "row",
                format!(
                    "{} columns, expected at least {}",
                    record.len(),
                    layout.min_len()
                ),
            ));
            continue;
        }
        let field = |at: usize| record.get(at).unwrap_or_default();
        let optional = |k: usize| layout.optional[k].map_or("", field);
        let [at_name, at_base, at_access, at_secret] = layout.required;
        let before = errors.len();
        let name = field(at_name);
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
        // An empty api_base is "not known yet": discovered with UserByAccessKey.Get.
        let api_base = match field(at_base) {
            "" => Some(None),
            raw => parse_api_base(raw)
                .map_err(|reason| errors.push(row_error(line, "api_base", reason)))
                .ok()
                .map(Some),
        };
        let access_key = field(at_access);
        if access_key.is_empty() {
            errors.push(row_error(line, "access_key", "is empty".into()));
        }
        let secret_key = field(at_secret);
        if secret_key.is_empty() {
            errors.push(row_error(line, "secret_key", "is empty".into()));
        }
        let limit = match optional(0) {
            "" => Some(DEFAULT_LIMIT),
            raw => whole_number(raw, 1..=10_000)
                .map_err(|reason| errors.push(row_error(line, "limit", reason)))
                .ok(),
        };
        let reserve = match optional(1) {
            "" => Ok(default_reserve),
            raw => raw
                .parse::<u32>()
                .map_err(|_| format!("{raw:?} is not a whole number from 0 to limit-1")),
        };
        let reserve = match (reserve, limit) {
            (Ok(r), Some(l)) if r >= l => {
                let from = if optional(1).is_empty() {
                    " (the default from --reserve / LSQ_RESERVE)"
                } else {
                    ""
                };
                errors.push(row_error(
                    line,
                    "reserve",
                    format!("{r}{from} is not below the limit {l}: it must be 0 to limit-1"),
                ));
                0
            }
            (Ok(r), _) => r,
            (Err(reason), _) => {
                errors.push(row_error(line, "reserve", reason));
                0
            }
        };
        let daily_limit = match optional(2) {
            "" => None,
            raw => whole_number(raw, 1..=MAX_DAILY_LIMIT)
                .map_err(|reason| errors.push(row_error(line, "daily_limit", reason)))
                .ok(),
        };
        if let (true, Some(api_base), Some(limit)) = (errors.len() == before, api_base, limit) {
            tenants.push(Tenant {
                name: name.to_string(),
                api_base,
                access_key: Secret::new(access_key),
                secret_key: Secret::new(secret_key),
                limit,
                reserve,
                daily_limit,
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
        assert_eq!(
            t[1].api_base.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:8080/")
        );
    }

    #[test]
    fn an_empty_api_base_is_discovered_later() {
        let csv = "tenant,api_base,access_key,secret_key
                   acme,,ak1,sk1
";
        let t = parse(csv.as_bytes()).expect("valid");
        assert_eq!(t[0].api_base, None);
    }

    #[test]
    fn a_discovered_host_name_or_url_becomes_an_api_base() {
        let host = api_base_from_host("api-in21.leadsquared.com").expect("host");
        assert_eq!(host.as_str(), "https://api-in21.leadsquared.com/");
        let url = api_base_from_host("https://api-us11.leadsquared.com/").expect("url");
        assert_eq!(url.as_str(), "https://api-us11.leadsquared.com/");
        let local = api_base_from_host("http://127.0.0.1:8089").expect("loopback");
        assert_eq!(local.as_str(), "http://127.0.0.1:8089/");
        for bad in [
            "",
            "http://api.leadsquared.com",
            "https://x.com/path",
            "ftp://x",
        ] {
            assert!(api_base_from_host(bad).is_err(), "{bad:?}");
        }
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

    #[test]
    fn five_column_files_stay_valid_and_new_columns_come_in_any_order() {
        let five = "tenant,api_base,access_key,secret_key,limit\n\
                    acme,https://api-in21.leadsquared.com,ak1,sk1,10\n";
        let t = parse_with(five.as_bytes(), 2).expect("valid");
        assert_eq!((t[0].limit, t[0].reserve, t[0].daily_limit), (10, 2, None));
        let shuffled = "daily_limit,secret_key,reserve,tenant,limit,access_key,api_base\n\
                        5000,sk1,3,acme,20,ak1,https://api-in21.leadsquared.com\n\
                        ,sk2,,beta,,ak2,https://api-in21.leadsquared.com\n";
        let t = parse_with(shuffled.as_bytes(), 1).expect("valid");
        assert_eq!(t[0].name, "acme");
        assert_eq!(t[0].access_key.expose(), "ak1");
        assert_eq!(
            (t[0].limit, t[0].reserve, t[0].daily_limit),
            (20, 3, Some(5000))
        );
        assert_eq!(
            (t[1].limit, t[1].reserve, t[1].daily_limit),
            (DEFAULT_LIMIT, 1, None)
        );
    }

    #[test]
    fn bad_reserve_and_daily_limit_are_reported_by_line_and_column() {
        let csv = "tenant,api_base,access_key,secret_key,limit,reserve,daily_limit\n\
                   a,https://x.leadsquared.com,ak,sk-secret-1,10,10,\n\
                   b,https://x.leadsquared.com,ak,sk-secret-2,10,-1,\n\
                   c,https://x.leadsquared.com,ak,sk-secret-3,10,some,\n\
                   d,https://x.leadsquared.com,ak,sk-secret-4,10,2,-5\n\
                   e,https://x.leadsquared.com,ak,sk-secret-5,10,2,lots\n\
                   f,https://x.leadsquared.com,ak,sk-secret-6,10,9,100\n";
        let errs = parse(csv.as_bytes()).expect_err("invalid");
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 5, "{text:?}");
        assert!(text[0].starts_with("line 2: reserve: 10 is not below the limit 10"));
        assert!(text[1].starts_with("line 3: reserve: \"-1\" is not a whole number"));
        assert!(text[2].starts_with("line 4: reserve: \"some\""));
        assert!(text[3].starts_with("line 5: daily_limit: \"-5\" is not a whole number"));
        assert!(text[4].starts_with("line 6: daily_limit: \"lots\""));
        assert!(!text.join("\n").contains("sk-secret"));
        // The default reserve is checked against each row's limit too.
        let errs = parse_with(
            b"tenant,api_base,access_key,secret_key,limit\na,https://x.leadsquared.com,ak,sk,5\n",
            5,
        )
        .expect_err("invalid");
        assert!(errs[0].to_string().contains("--reserve"), "{}", errs[0]);
    }

    #[test]
    fn unknown_repeated_or_missing_columns_are_header_errors() {
        for header in [
            "tenant,api_base,access_key,secret_key,limit,colour",
            "tenant,api_base,access_key,secret_key,limit,limit",
            "tenant,api_base,access_key,limit",
        ] {
            let errs = parse(format!("{header}\n").as_bytes()).expect_err(header);
            assert_eq!(
                (errs[0].line, errs[0].field.as_str()),
                (1, "header"),
                "{header}"
            );
        }
    }
}
