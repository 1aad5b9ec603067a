//! A job file, read and checked: every line, split between the machine's cores, each
//! problem reported with its line number.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::ops::ControlFlow;

use super::check::check_line;
use crate::job::NewJob;
use crate::leadsquared::BodyLimits;

/// A problem on one line of a job file; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {reason}")]
pub struct LineError {
    /// Line in the file.
    pub line: u64,
    /// The field (`tenant`, `key`, `webhook.URL`, ...), `json` for a line that is not JSON,
    /// or `job` for the line as a whole.
    pub field: String,
    /// What is wrong; never quotes a webhook value (custom header values are secrets).
    pub reason: String,
}

/// A job file, read and checked.
#[derive(Clone, Debug, Default)]
pub struct JobFile {
    /// The valid jobs, in file order.
    pub jobs: Vec<NewJob>,
    /// Every problem, in file order (a line may have several).
    pub errors: Vec<LineError>,
    /// Lines with at least one problem.
    pub invalid_lines: u64,
}

/// Reads a JSON Lines job file and checks every line (blank lines are skipped; `\r\n` line
/// ends are fine). I/O errors end the read; problems with lines are collected in
/// [`JobFile::errors`]. See [`check_jobs`].
pub fn read_jobs(
    mut reader: impl BufRead,
    registered: &HashSet<String>,
    limits: &BodyLimits,
) -> std::io::Result<JobFile> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    Ok(check_jobs(&data, registered, limits))
}

/// Lines per thread below which checking is not split: a thread costs more than it saves.
const LINES_PER_THREAD: usize = 2_000;

/// Checks every line of JSON Lines text (a leading UTF-8 byte order mark is skipped). Lines
/// are split between the machine's cores (decoding and validating is most of an import's
/// time); the result is in file order. Raw bytes, so that a line that is not UTF-8 is
/// reported with its number.
pub fn check_jobs(data: &[u8], registered: &HashSet<String>, limits: &BodyLimits) -> JobFile {
    // A byte order mark, as some Windows editors write at the start of a UTF-8 file, is not
    // part of the first line.
    let data = data.strip_prefix(BOM).unwrap_or(data);
    check_part(data, 0, registered, limits)
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Checks whole lines of a file, the first of which is line `first_index + 1`.
fn check_part(
    data: &[u8],
    first_index: usize,
    registered: &HashSet<String>,
    limits: &BodyLimits,
) -> JobFile {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(lines.len() / LINES_PER_THREAD)
        .max(1);
    let per_thread = lines.len().div_ceil(threads).max(1);
    if threads == 1 {
        return check_lines(&lines, first_index, registered, limits);
    }
    let parts: Vec<JobFile> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(per_thread)
            .enumerate()
            .map(|(i, chunk)| {
                scope.spawn(move || {
                    check_lines(chunk, first_index + i * per_thread, registered, limits)
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in a checker is a bug; re-raise it rather than lose lines.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut file = JobFile::default();
    for part in parts {
        file.jobs.extend(part.jobs);
        file.errors.extend(part.errors);
        file.invalid_lines += part.invalid_lines;
    }
    file
}

/// What [`scan_jobs`] saw in a whole file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanTotals {
    /// Valid jobs.
    pub valid: u64,
    /// Lines with at least one problem.
    pub invalid_lines: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Reads a JSON Lines job file in parts of about `part_bytes` (whole lines each; a line
/// longer than that is one part of its own) and checks each part as [`check_jobs`] does, on
/// every core, handing it to `each` with the line numbers of the whole file. So a file of
/// any size is checked in bounded memory: a part, its checked jobs and its problems at a
/// time. `each` may stop the scan (`ControlFlow::Break`); the totals then cover the parts
/// read so far.
pub fn scan_jobs(
    mut reader: impl Read,
    registered: &HashSet<String>,
    limits: &BodyLimits,
    part_bytes: usize,
    mut each: impl FnMut(JobFile) -> ControlFlow<()>,
) -> std::io::Result<ScanTotals> {
    let part_bytes = part_bytes.max(1);
    let mut totals = ScanTotals::default();
    let mut buf: Vec<u8> = Vec::with_capacity(part_bytes + (64 << 10));
    let mut first_index = 0usize;
    let mut at_start = true;
    let mut eof = false;
    // How full the buffer is filled before a part is cut: the part size, more while a line
    // is longer than that.
    let mut want = part_bytes;
    while !eof {
        // Fill the buffer to `want`, or to the end of the input.
        while buf.len() < want {
            let len = buf.len();
            buf.resize(want.max(len + (64 << 10)), 0);
            let n = loop {
                match reader.read(&mut buf[len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            buf.truncate(len + n);
            totals.bytes += n as u64;
            if n == 0 {
                eof = true;
                break;
            }
        }
        if at_start {
            if buf.starts_with(BOM) {
                buf.drain(..BOM.len());
            }
            at_start = false;
        }
        // A part ends after its last newline; what follows starts the next part. A part
        // with no newline at all grows until one comes, or the input ends.
        let end = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => {
                    want = buf.len().saturating_mul(2);
                    continue;
                }
            }
        };
        want = part_bytes;
        if end == 0 {
            break;
        }
        let part = &buf[..end];
        // Lines in this part: its newlines (the empty piece after the last one is no line).
        let lines = part.iter().filter(|b| **b == b'\n').count();
        let checked = check_part(part, first_index, registered, limits);
        totals.valid += checked.jobs.len() as u64;
        totals.invalid_lines += checked.invalid_lines;
        first_index += lines;
        buf.drain(..end);
        if each(checked).is_break() {
            break;
        }
    }
    Ok(totals)
}

/// Checks `lines`, the first of which is line `first_index + 1` of the file.
fn check_lines(
    lines: &[&[u8]],
    first_index: usize,
    registered: &HashSet<String>,
    limits: &BodyLimits,
) -> JobFile {
    let mut file = JobFile::default();
    for (index, line) in lines.iter().enumerate() {
        let line_no = (first_index + index) as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match check_line(line, registered, limits) {
            Ok(job) => file.jobs.push(job),
            Err(errors) => {
                file.invalid_lines += 1;
                file.errors.extend(errors.into_iter().map(|e| LineError {
                    line: line_no,
                    field: e.field,
                    reason: e.reason,
                }));
            }
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::fixtures::{body, registered};
    use super::*;

    #[test]
    fn reads_valid_lines_and_reports_every_bad_one() {
        let good = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        let mut bad_url = body();
        bad_url["URL"] = "not a url".into();
        bad_url["CustomHeaders"][0]["Value"] = "SECRET-VALUE".into();
        let lines = [
            good.clone(),
            String::new(),
            serde_json::json!({"tenant": "acme", "webhook": bad_url}).to_string(),
            "{not json".to_string(),
            serde_json::json!({"tenant": "acme", "webhook": body(), "extra": 1}).to_string(),
            serde_json::json!({"tenant": "acme", "webhook": body(), "key": "k1"}).to_string(),
            "[1,2]\r".to_string(),
            serde_json::json!({"tenant": "nobody", "webhook": body()}).to_string(),
        ];
        let text = lines.join("\n");
        let file = read_jobs(text.as_bytes(), &registered(), &BodyLimits::default()).expect("read");
        assert_eq!(file.jobs.len(), 2);
        assert_eq!(file.jobs[1].key, "k1");
        assert!(file.jobs[0].key.starts_with(crate::job::DERIVED_KEY_PREFIX));
        assert_eq!(file.invalid_lines, 5);
        let errors: Vec<String> = file.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 3: webhook.URL: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("line 4: json: ")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 5: job: unknown field \"extra\""))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 8: tenant: unknown tenant"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 7: job: must be a JSON object"))
        );
        assert!(!errors.join("\n").contains("SECRET-VALUE"));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let line = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        let text = format!("\u{feff}{line}\r\n{{broken\r\n");
        let file = check_jobs(text.as_bytes(), &registered(), &BodyLimits::default());
        assert_eq!(file.jobs.len(), 1);
        assert_eq!(file.errors.len(), 1);
        assert_eq!(file.errors[0].line, 2);
    }

    /// Scanned in parts of a few bytes, a file gives what one check of the whole gives: the
    /// same jobs in the same order and the same problems on the same lines, a line longer
    /// than a part included.
    #[test]
    fn a_file_scanned_in_parts_is_checked_as_a_whole() {
        let good = |n: usize| {
            let mut b = body();
            b["Description"] = format!("hook {n} {}", "x".repeat(n * 7)).into();
            serde_json::json!({"tenant": "acme", "webhook": b}).to_string()
        };
        let mut lines: Vec<String> = (0..40).map(good).collect();
        lines[3] = "{broken".into();
        lines[17] = String::new();
        lines[25] = serde_json::json!({"tenant": "nobody", "webhook": body()}).to_string();
        let text = format!("\u{feff}{}\r\n", lines.join("\r\n"));
        let whole = check_jobs(text.as_bytes(), &registered(), &BodyLimits::default());
        for part in [1, 50, 333, 4096, 1 << 20] {
            let mut jobs = Vec::new();
            let mut errors = Vec::new();
            let totals = scan_jobs(
                text.as_bytes(),
                &registered(),
                &BodyLimits::default(),
                part,
                |f| {
                    jobs.extend(f.jobs);
                    errors.extend(f.errors);
                    ControlFlow::Continue(())
                },
            )
            .expect("scan");
            assert_eq!(jobs, whole.jobs, "part {part}");
            assert_eq!(errors, whole.errors, "part {part}");
            assert_eq!(
                (totals.valid, totals.invalid_lines, totals.bytes),
                (37, 2, text.len() as u64)
            );
        }
        assert_eq!(whole.errors[0].line, 4);
        assert_eq!(whole.errors[1].line, 26);
        // Stopping early: only the parts read so far.
        let mut parts = 0;
        scan_jobs(
            text.as_bytes(),
            &registered(),
            &BodyLimits::default(),
            100,
            |_| {
                parts += 1;
                ControlFlow::Break(())
            },
        )
        .expect("scan");
        assert_eq!(parts, 1);
    }

    #[test]
    fn large_files_keep_file_order_and_line_numbers() {
        let good = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        let mut lines: Vec<String> = (0..9_000)
            .map(|n| {
                let mut b = body();
                b["Description"] = format!("hook {n}").into();
                serde_json::json!({"tenant": "acme", "webhook": b}).to_string()
            })
            .collect();
        lines[7_001] = "{broken".into();
        lines[8_999] = good;
        let file = check_jobs(
            lines.join("\n").as_bytes(),
            &registered(),
            &BodyLimits::default(),
        );
        assert_eq!(file.jobs.len(), 8_999);
        assert_eq!(file.invalid_lines, 1);
        assert_eq!(file.errors[0].line, 7_002);
        let description = |i: usize| {
            serde_json::from_str::<Value>(&file.jobs[i].body).expect("json")["Description"].clone()
        };
        assert_eq!(description(7_001), "hook 7002");
        assert_eq!(description(0), "hook 0");
    }
}
