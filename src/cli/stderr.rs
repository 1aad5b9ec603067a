//! The lines the commands themselves write to standard error (a worker's run summary, a
//! fatal error, a job file's invalid lines), in the format `--log-format` asks for: as
//! they are with `text`, and with `json` as one JSON object per line in the shape of the
//! `tracing` JSON log (`timestamp`, `level`, `target`, `message`, then the fields), so that
//! with `--log-format json` every line on standard error is JSON (issue 15).
//!
//! Writes are never an error: when standard error is gone there is nobody to tell.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::LogFormat;

/// Whether `--log-format json` was given (set once, by [`set_format`]).
static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the format of every later [`line`]: called when logging is set up.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// The current format.
pub fn format() -> LogFormat {
    if JSON.load(Ordering::Relaxed) {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// How serious a line is (the `level` of its JSON object).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// A report, e.g. the run summary.
    Info,
    /// Something the operator should look at, e.g. an invalid line that was skipped.
    Warn,
    /// The command failed.
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Writes `text` (with `--log-format text`) or a JSON object of `message` and `fields`
/// (with `json`) as one line on standard error. `text` is the line as a person reads it;
/// `message` its JSON form's message, usually the same.
pub fn line_with(
    level: Level,
    text: &str,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) {
    let out = match format() {
        LogFormat::Text => text.to_string(),
        LogFormat::Json => json_line(level, message, fields, SystemTime::now()),
    };
    let _ = writeln!(std::io::stderr(), "{out}");
}

/// [`line_with`] without fields, the same text in both formats.
pub fn line(level: Level, text: &str) {
    line_with(level, text, text, serde_json::Map::new());
}

/// The JSON object of one line (see the module header).
pub fn json_line(
    level: Level,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
    at: SystemTime,
) -> String {
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), rfc3339(at).into());
    object.insert("level".into(), level.name().into());
    object.insert("target".into(), "lsq_webhooks".into());
    object.insert("message".into(), message.into());
    for (k, v) in fields {
        object.entry(k).or_insert(v);
    }
    serde_json::Value::Object(object).to_string()
}

/// `at` as RFC 3339 in UTC with microseconds, as `tracing-subscriber` writes it
/// (`2026-12-01T11:40:00.123456Z`).
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::ops::status::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_125_200_123_456);
        assert_eq!(rfc3339(at), "2026-12-01T11:40:00.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn a_json_line_is_one_object_with_the_fields_after_the_message() {
        let mut fields = serde_json::Map::new();
        fields.insert("created".into(), 3.into());
        fields.insert("message".into(), "not this".into());
        let line = json_line(Level::Info, "done", fields, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "done");
        assert_eq!(v["created"], 3);
        assert!(!line.contains('\n'));
    }
}
