//! Shared by the ops tests: a real `serve` router on a free port over a queue filled through
//! the `Queue` trait, and a strict parser of the Prometheus text exposition format.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use lsq_webhooks::job::NewJob;
use lsq_webhooks::ops::{ApiLimits, ApiToken, AppState, Metrics, app, serve};
use lsq_webhooks::queue::{Dispatch, Queue};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;
use tokio_util::sync::CancellationToken;

/// The token the test servers accept.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A server running `app` on 127.0.0.1 on a port the OS chose; stopped when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The queue behind it.
    pub queue: Arc<dyn Queue>,
    /// Its metrics.
    pub metrics: Metrics,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Starts a server over `queue`.
    pub async fn start(queue: Arc<dyn Queue>, limits: ApiLimits) -> Server {
        let metrics = Metrics::new();
        let state = AppState {
            queue: queue.clone(),
            metrics: metrics.clone(),
            token: ApiToken::new(Secret::new(TOKEN)).unwrap(),
            limits,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app(state), stop.clone()));
        Server {
            base,
            queue,
            metrics,
            stop,
            task: Some(task),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A tenant whose API is a loopback address nobody calls in these tests.
pub fn tenant(name: &str, limit: u32) -> Tenant {
    Tenant {
        name: name.into(),
        api_base: Some(url::Url::parse("http://127.0.0.1:9").unwrap()),
        access_key: Secret::new(format!("ak-{name}")),
        secret_key: Secret::new(format!("sk-{name}")),
        limit,
        reserve: 0,
        daily_limit: None,
    }
}

/// A valid Create body.
pub fn webhook(n: usize) -> serde_json::Value {
    serde_json::json!({
        "Description": format!("hook {n}"),
        "URL": format!("https://hooks.example.com/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": []
    })
}

/// Fills a queue through the trait: `tenants` (name, limit), then per tenant `done` jobs
/// completed, `dead` jobs buried with a reason, and `waiting` jobs left queued. Returns the
/// dead jobs' reasons.
pub async fn fill(
    q: &dyn Queue,
    tenants: &[(&str, u32)],
    done: usize,
    dead: usize,
    waiting: usize,
) -> Vec<String> {
    let ts: Vec<Tenant> = tenants.iter().map(|(n, l)| tenant(n, *l)).collect();
    q.put_tenants(&ts).await.unwrap();
    let mut reasons = Vec::new();
    for (name, _) in tenants {
        let jobs: Vec<NewJob> = (0..done + dead + waiting)
            .map(|i| NewJob {
                delete: false,
                legacy_key: None,
                tenant: (*name).into(),
                body: webhook(i).to_string(),
                key: format!("{name}-{i}"),
            })
            .collect();
        q.push(&jobs).await.unwrap();
    }
    for (name, _) in tenants {
        for i in 0..done + dead {
            let job = loop {
                match q.dispatch().await.unwrap() {
                    Dispatch::Job(j) if j.tenant == *name => break j,
                    Dispatch::Job(j) => {
                        q.requeue(
                            &j,
                            lsq_webhooks::queue::Requeue {
                                spend_attempt: false,
                                outcome_unknown: false,
                            },
                        )
                        .await
                        .unwrap();
                    }
                    Dispatch::Wait(d) => tokio::time::sleep(d).await,
                    Dispatch::Empty => panic!("queue empty"),
                }
            };
            q.answered(&job).await.unwrap();
            if i < done {
                q.complete(&job, &format!("wh-{name}-{i}"), false)
                    .await
                    .unwrap();
            } else {
                let reason = format!("MXInvalidInputException: bad URL for {name} #{i}");
                q.bury(&job, &reason).await.unwrap();
                reasons.push(reason);
            }
        }
    }
    reasons
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count`/`_total` suffix as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition: family name -> type, and the samples.
#[derive(Debug, Default)]
pub struct Exposition {
    /// `# TYPE` of each family.
    pub types: HashMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// Parses `{a="x",b="y"}` (the braces included) at the start of `s`; returns the labels and
/// the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// Parses the Prometheus text exposition format (0.0.4) strictly: every sample belongs to a
/// family declared with `# TYPE` before it, names and labels are well formed, no series
/// repeats, histograms have `le` buckets that are cumulative and end at `+Inf` equal to
/// `_count`, and counters are finite and not negative.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helped = HashSet::new();
    let mut series = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !valid_metric_name(name) || !helped.insert(name.to_string()) {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if parts.next().is_some() || !valid_metric_name(name) {
                return Err(at("bad TYPE line".into()));
            }
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(at(format!("unknown type {kind}")));
            }
            if out
                .types
                .insert(name.to_string(), kind.to_string())
                .is_some()
            {
                return Err(at("TYPE repeated".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| out.types.contains_key(*base))
            .unwrap_or(name);
        let kind = out
            .types
            .get(family)
            .ok_or_else(|| at(format!("sample before # TYPE of {family}")))?;
        match kind.as_str() {
            "counter" if !(value.is_finite() && value >= 0.0) => {
                return Err(at("counter not a finite non-negative number".into()));
            }
            "histogram" if name.ends_with("_bucket") && !labels.contains_key("le") => {
                return Err(at("bucket without le".into()));
            }
            _ => {}
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series repeated".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: buckets cumulative, +Inf present and equal to _count.
    for (family, kind) in &out.types {
        if kind != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in out
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut rest = s.labels.clone();
            let le = parse_value(&rest.remove("le").unwrap_or_default())?;
            groups
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        if groups.is_empty() {
            return Err(format!("histogram {family} has no buckets"));
        }
        for (labels, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !buckets.windows(2).all(|w| w[0].1 <= w[1].1) {
                return Err(format!("{family}{labels}: buckets not cumulative"));
            }
            let last = buckets.last().copied().unwrap_or_default();
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{labels}: no +Inf bucket"));
            }
            let count = out
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .map(|s| s.value);
            if count != Some(last.1) {
                return Err(format!(
                    "{family}{labels}: +Inf bucket {} != _count {count:?}",
                    last.1
                ));
            }
        }
    }
    Ok(out)
}
