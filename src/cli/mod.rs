//! The command line: global options, one file per command (each with its `Args` and `run`),
//! and the mapping of errors to exit codes (0 success, 1 failure, 2 bad usage or input,
//! 141 when standard output's reader went away: see [`output`]).
#![warn(clippy::print_stdout)]

pub mod dead;
pub mod demo;
pub mod enqueue;
pub mod job;
pub mod output;
pub mod pause;
pub mod results;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod stderr;
pub mod sync;
pub mod tenants;
pub mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::leadsquared::BodyLimits;

/// Provision LeadSquared webhooks for many tenants through a Redis queue with a shared
/// per-tenant rate limiter.
#[derive(Debug, Parser)]
#[command(name = "lsq-webhooks", version, about, long_about = None)]
pub struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Redis URL [default: redis://127.0.0.1:6379]. `demo` uses Redis only when this (or
    /// REDIS_URL) is given, and an in-process queue otherwise.
    // `hide_env_values`: the URL can hold Redis's password, and clap prints an env var's
    // value in `--help` otherwise (tests/secrets.rs checks every command's help).
    #[arg(
        long = "redis",
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        global = true
    )]
    pub redis: Option<String>,
    /// Queue name: every key of this queue is under this prefix.
    #[arg(
        long = "queue",
        env = "LSQ_QUEUE",
        default_value = "lsq",
        global = true
    )]
    pub queue: String,
    /// Replicas that must confirm each push, dispatch and completion (Redis `WAIT`) before
    /// it counts as done [default: 1 with a redis+sentinel:// URL, else 0]. 0: no WAIT.
    #[arg(
        long = "min-replicas",
        env = "LSQ_MIN_REPLICAS",
        value_name = "N",
        global = true
    )]
    pub min_replicas: Option<u32>,
    /// How long each WAIT for `--min-replicas` may take, in milliseconds; a write not
    /// confirmed in time is not acknowledged (retried, or reported).
    #[arg(
        long = "replica-timeout-ms",
        env = "LSQ_REPLICA_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=60_000),
        global = true
    )]
    pub replica_timeout_ms: u64,
    /// With fewer replicas connected than `--min-replicas` (a failover left none): `degrade`
    /// waits for those connected and goes on, saying so in the log, `status`, `/readyz`, the
    /// page and the metrics; `strict` acknowledges no write (so pushes and dispatches wait)
    /// until enough are back.
    #[arg(
        long = "replication",
        env = "LSQ_REPLICATION",
        value_enum,
        default_value_t = Replication::Degrade,
        global = true
    )]
    pub replication: Replication,
    /// With Sentinel, follow the sentinels' `+switch-master` announcements (a new primary is
    /// used the moment it is promoted); `false` finds it only when a command fails.
    #[arg(
        long = "sentinel-events",
        env = "LSQ_SENTINEL_EVENTS",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub sentinel_events: bool,
    /// Shards of the queue (issue 17): each tenant's jobs live in one, each shard under its
    /// own Redis Cluster hash tag [default: the queue's own count once written; else 16 on
    /// a redis+cluster:// URL, 1 otherwise]. Fixed when the queue is first written: a
    /// different count later is refused (exit 2).
    #[arg(
        long = "shards",
        env = "LSQ_SHARDS",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::queue::redis::MAX_SHARDS)),
        global = true
    )]
    pub shards: Option<u32>,
    /// Log format: human-readable text, or one JSON object per line (then every line on
    /// standard error is JSON, the run summary and a fatal error included).
    #[arg(
        long = "log-format",
        env = "LSQ_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
}

/// Where Redis is when neither `--redis` nor `REDIS_URL` says.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Global {
    /// The Redis URL to use: `--redis`, else `REDIS_URL`, else [`DEFAULT_REDIS_URL`].
    pub fn redis_url(&self) -> &str {
        self.redis_given().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// How the Redis queue connects beyond its URL (`--min-replicas`, `--replica-timeout-ms`).
    pub fn redis_options(&self) -> crate::queue::redis::RedisOptions {
        crate::queue::redis::RedisOptions {
            min_replicas: self.min_replicas,
            replica_timeout: std::time::Duration::from_millis(self.replica_timeout_ms),
            replication: match self.replication {
                Replication::Degrade => crate::queue::ReplicationMode::Degrade,
                Replication::Strict => crate::queue::ReplicationMode::Strict,
            },
            sentinel_events: self.sentinel_events,
        }
    }

    /// The Redis URL only if one was given (flag or environment; an empty value is none):
    /// `demo` runs without Redis otherwise.
    pub fn redis_given(&self) -> Option<&str> {
        self.redis.as_deref().filter(|url| !url.trim().is_empty())
    }

    /// Where the Redis URL points, for messages: `host:port` (or the socket path), never
    /// the user name or password it may hold.
    pub fn redis_where(&self) -> String {
        redis_where(self.redis_url())
    }
}

/// `host:port` of a Redis URL (the path of a `unix:` / `redis+unix:` one), the sentinels
/// and master of a Sentinel URL, the nodes of a Cluster URL, without credentials; `the
/// Redis URL given` when it does not parse.
pub fn redis_where(url: &str) -> String {
    use crate::queue::redis::Target;
    match Target::parse(url) {
        Ok(Target::Sentinel(s)) => {
            return format!(
                "master {:?} of the sentinels {}",
                s.master,
                s.sentinel_list()
            );
        }
        Ok(Target::Cluster(c)) => return format!("the cluster of {}", c.node_list()),
        _ => {}
    }
    match url::Url::parse(url.trim()) {
        Ok(u) => match u.host_str() {
            Some(host) => format!("{host}:{}", u.port().unwrap_or(6379)),
            None => u.path().to_string(),
        },
        Err(_) => "the Redis URL given".to_string(),
    }
}

/// `--replication`: see [`crate::queue::ReplicationMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Replication {
    /// Wait for the replicas connected, at most `--min-replicas`; go on degraded with fewer.
    #[value(alias = "default")]
    Degrade,
    /// Wait for `--min-replicas`, always.
    Strict,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load or update the tenant registry from a CSV file.
    #[command(subcommand)]
    Tenants(tenants::Command),
    /// Validate a JSON Lines job file (or `-` for stdin) and enqueue its jobs.
    Enqueue(enqueue::Args),
    /// Make the named tenants' webhooks what a job file says: plan (create, update, delete
    /// with --prune, unchanged), then enqueue it unless --dry-run.
    Sync(sync::Args),
    /// Drain the queue: call LeadSquared for each job, within each tenant's limit.
    Worker(worker::Args),
    /// Show what is queued, scheduled, running, done and dead, per tenant.
    Status(status::Args),
    /// One row per finished job.
    Results(results::Args),
    /// One job: its record and its last calls (by id, or by tenant and idempotency key).
    Job(job::Args),
    /// Dead-letter handling.
    #[command(subcommand)]
    Dead(dead::Command),
    /// Pause the whole queue: no job is dispatched until `resume`; jobs in flight finish,
    /// the others stay queued.
    Pause(pause::PauseArgs),
    /// Resume the queue after `pause`.
    Resume,
    /// HTTP API for producers and ops, metrics and the status page.
    Serve(serve::Args),
    /// Run a LeadSquared API simulator.
    Simulate(simulate::Args),
    /// Run the whole thing against the simulator, with a progress display.
    Demo(demo::Args),
}

/// How large a job's Create body and its parts may be, for every command that checks jobs
/// (`enqueue`, `sync`, `serve`). The defaults and why: [`crate::leadsquared::BodyLimits`].
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookLimitArgs {
    /// Longest `URL` (and each of `LandingPageUrls`), in bytes.
    #[arg(long, env = "LSQ_MAX_URL_BYTES", value_name = "N",
          default_value_t = BodyLimits::default().url)]
    pub max_url_bytes: usize,
    /// Longest `Description`, in characters.
    #[arg(long, env = "LSQ_MAX_DESCRIPTION_CHARS", value_name = "N",
          default_value_t = BodyLimits::default().description)]
    pub max_description_chars: usize,
    /// Longest custom header name (`CustomHeaders[i].Key`), in bytes.
    #[arg(long, env = "LSQ_MAX_HEADER_KEY_BYTES", value_name = "N",
          default_value_t = BodyLimits::default().header_key)]
    pub max_header_key_bytes: usize,
    /// Longest custom header value (`CustomHeaders[i].Value`), in bytes.
    #[arg(long, env = "LSQ_MAX_HEADER_VALUE_BYTES", value_name = "N",
          default_value_t = BodyLimits::default().header_value)]
    pub max_header_value_bytes: usize,
    /// Largest Create body as stored and sent, in bytes.
    #[arg(long, env = "LSQ_MAX_WEBHOOK_BYTES", value_name = "N",
          default_value_t = BodyLimits::default().body)]
    pub max_webhook_bytes: usize,
}

impl WebhookLimitArgs {
    /// The limits these options give.
    pub fn limits(&self) -> BodyLimits {
        BodyLimits {
            url: self.max_url_bytes,
            description: self.max_description_chars,
            header_key: self.max_header_key_bytes,
            header_value: self.max_header_value_bytes,
            body: self.max_webhook_bytes,
        }
    }
}

/// A usage or input error: exit code 2. Anything else a command returns is exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The Redis queue every command uses: its shards behind one [`crate::queue::Queue`].
pub type RedisShards = crate::queue::sharded::ShardedQueue<crate::queue::redis::RedisQueue>;

/// The queue settings the global options give (`--queue`); the rest are defaults.
pub fn queue_config(global: &Global) -> crate::queue::QueueConfig {
    crate::queue::QueueConfig {
        name: global.queue.clone(),
        ..Default::default()
    }
}

/// Connects to the Redis queue named by the global options. A queue name that cannot be
/// used is bad input (exit 2).
/// With Redis down it fails at once (within 3 s: see `queue::redis::connect`), with one
/// line naming where Redis was looked for.
pub async fn connect_queue(global: &Global) -> anyhow::Result<RedisShards> {
    connect_with(global, queue_config(global)).await
}

/// [`connect_queue`] with the given settings.
pub async fn connect_with(
    global: &Global,
    config: crate::queue::QueueConfig,
) -> anyhow::Result<RedisShards> {
    use crate::queue::QueueError;
    match RedisShards::connect(
        global.redis_url(),
        config,
        global.redis_options(),
        global.shards,
    )
    .await
    {
        Ok(q) => Ok(q),
        Err(QueueError::Config(reason)) => Err(BadInput(reason).into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot reach the Redis queue at {}",
            global.redis_where()
        ))),
    }
}

/// Done records deleted per call during retention.
const RETENTION_BATCH: usize = 1000;

/// `--done-ttl-secs` of `worker` and `serve`: `None` when not given; 0 is refused.
pub fn done_ttl(secs: Option<u64>) -> anyhow::Result<Option<std::time::Duration>> {
    match secs {
        Some(0) => Err(BadInput("--done-ttl-secs must be at least 1".into()).into()),
        s => Ok(s.map(std::time::Duration::from_secs)),
    }
}

/// Retention (`--done-ttl-secs`): deletes done records older than `ttl` at once and then
/// every `min(ttl, 60 s)`, in batches, until `stop`. Their idempotency keys stay taken (a
/// job pushed again is still a duplicate); their results are gone, so export them
/// (`results --format csv`) within the TTL.
pub fn spawn_retention(
    queue: std::sync::Arc<dyn crate::queue::Queue>,
    ttl: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let every = ttl.min(std::time::Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            let mut deleted = 0u64;
            loop {
                match queue.purge_done_before(ttl, RETENTION_BATCH).await {
                    Ok(n) => {
                        deleted += n;
                        if n < RETENTION_BATCH as u64 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("retention: cannot delete old done records: {e}");
                        break;
                    }
                }
            }
            if deleted > 0 {
                tracing::info!(
                    deleted,
                    ttl_secs = ttl.as_secs(),
                    "retention: deleted done records older than the TTL"
                );
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// How long `worker` and `serve` wait between two tries while Redis does not answer.
pub const REDIS_WAIT_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Connects for a long-running command (`worker`, `serve`): while Redis does not answer,
/// logs a warning at once and again at every try (every [`REDIS_WAIT_RETRY`] plus the try
/// itself), and goes on when it answers. `None` when `stop` is cancelled (SIGTERM) first.
/// Errors other than "unavailable" (a bad queue name, a refused password) end at once.
pub async fn connect_waiting(
    global: &Global,
    config: crate::queue::QueueConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<RedisShards>> {
    use crate::queue::QueueError;
    let started = std::time::Instant::now();
    let mut tries = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            got = RedisShards::connect(
                global.redis_url(),
                config.clone(),
                global.redis_options(),
                global.shards,
            ) => got,
        };
        match attempt {
            Ok(q) => {
                if tries > 0 {
                    tracing::info!(
                        redis = %global.redis_where(),
                        waited_secs = started.elapsed().as_secs(),
                        "Redis answers: starting"
                    );
                }
                return Ok(Some(q));
            }
            Err(e @ QueueError::Unavailable(_)) => {
                tries += 1;
                tracing::warn!(
                    redis = %global.redis_where(),
                    tries,
                    waited_secs = started.elapsed().as_secs(),
                    "waiting for Redis ({e}); trying again in {} s",
                    REDIS_WAIT_RETRY.as_secs()
                );
            }
            Err(QueueError::Config(reason)) => return Err(BadInput(reason).into()),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot use the Redis queue at {}",
                    global.redis_where()
                )));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(REDIS_WAIT_RETRY) => {}
        }
    }
}

/// A command line clap refused (or `--help` / `--version`): help and version go to
/// standard output as clap prints them (exit 0); a usage error goes to standard error as
/// clap prints it, or, when `--log-format json` (or `LSQ_LOG_FORMAT=json`) was asked for,
/// as one JSON line (exit 2).
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) || !json_asked(
        std::env::args().skip(1),
        std::env::var("LSQ_LOG_FORMAT").ok(),
    ) {
        e.exit();
    }
    stderr::set_format(LogFormat::Json);
    let rendered = e.render().to_string();
    let message = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    stderr::line(stderr::Level::Error, &message);
    ExitCode::from(2)
}

/// Whether a command line clap refused asked for JSON logs (`--log-format json`,
/// `--log-format=json`, or the environment's `LSQ_LOG_FORMAT`; the last flag wins).
fn json_asked(args: impl Iterator<Item = String>, env: Option<String>) -> bool {
    let mut json = env.is_some_and(|v| v.trim().eq_ignore_ascii_case("json"));
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let value = if arg == "--log-format" {
            args.peek().cloned()
        } else {
            arg.strip_prefix("--log-format=").map(str::to_string)
        };
        if let Some(v) = value {
            json = v.eq_ignore_ascii_case("json");
        }
    }
    json
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let global = cli.global;
    let result = match cli.command {
        Command::Tenants(c) => tenants::run(&global, c).await,
        Command::Enqueue(a) => enqueue::run(&global, a).await,
        Command::Sync(a) => sync::run(&global, a).await,
        Command::Worker(a) => worker::run(&global, a).await,
        Command::Status(a) => status::run(&global, a).await,
        Command::Results(a) => results::run(&global, a).await,
        Command::Job(a) => job::run(&global, a).await,
        Command::Dead(c) => dead::run(&global, c).await,
        Command::Pause(a) => pause::pause(&global, a).await,
        Command::Resume => pause::resume(&global).await,
        Command::Serve(a) => serve::run(&global, a).await,
        Command::Simulate(a) => simulate::run(&global, a).await,
        Command::Demo(a) => demo::run(&global, a).await,
    };
    match result {
        Ok(code) => code,
        // `| head` has read what it wanted: nothing to report.
        Err(_) if output::reader_gone() => ExitCode::from(output::READER_GONE),
        Err(e) => {
            // Nobody to tell if standard error is gone too.
            // One line, whatever the cause's text holds (redis-rs's parse errors span
            // several).
            let message = format!("{e:#}")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            stderr::line_with(
                stderr::Level::Error,
                &format!("error: {message}"),
                &message,
                serde_json::Map::new(),
            );
            if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

impl Command {
    /// The log level when `RUST_LOG` does not set one: `info`, but `warn` for `demo`, whose
    /// progress display would be drowned by a line per retry.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Demo(_) => "warn",
            _ => "info",
        }
    }
}

/// Sets up `tracing`: level from `RUST_LOG` (default `default_level`: see
/// [`Command::default_log_level`]), text or JSON, to stderr. Text is coloured only when
/// stderr is a terminal (and `NO_COLOR` is unset), so logs piped to a file or a collector
/// carry no escape codes. A `RUST_LOG` that does not parse is reported, and the default is
/// used.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    stderr::set_format(format);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&spec)
            .unwrap_or_else(|e| {
                let message =
                    format!("RUST_LOG={spec:?} is not a valid filter ({e}); using {default_level}");
                stderr::line_with(
                    stderr::Level::Warn,
                    &format!("warning: {message}"),
                    &message,
                    serde_json::Map::new(),
                );
                tracing_subscriber::EnvFilter::new(default_level)
            }),
        _ => tracing_subscriber::EnvFilter::new(default_level),
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> Global {
        match Cli::try_parse_from(args) {
            Ok(cli) => cli.global,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_redis_url_given_is_used_and_an_empty_one_is_none() {
        // The flag wins over REDIS_URL, whatever the environment of the test says.
        let g = global(&[
            "lsq-webhooks",
            "--redis",
            "redis://db.internal:6380",
            "demo",
        ]);
        assert_eq!(g.redis_given(), Some("redis://db.internal:6380"));
        assert_eq!(g.redis_url(), "redis://db.internal:6380");
        let g = global(&["lsq-webhooks", "demo", "--redis", " "]);
        assert_eq!(g.redis_given(), None, "demo runs embedded");
        assert_eq!(
            g.redis_url(),
            DEFAULT_REDIS_URL,
            "other commands use the default"
        );
    }

    #[test]
    fn json_logs_are_seen_on_a_command_line_clap_refused() {
        let args = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(json_asked(args(&["--log-format", "json", "nope"]), None));
        assert!(json_asked(args(&["status", "--log-format=json"]), None));
        assert!(json_asked(args(&["status"]), Some("json".into())));
        assert!(!json_asked(
            args(&["--log-format", "text"]),
            Some("json".into())
        ));
        assert!(!json_asked(
            args(&["status", "--", "--log-format=json"]),
            None
        ));
        assert!(!json_asked(args(&["status"]), None));
    }

    #[test]
    fn where_redis_is_never_shows_its_password() {
        assert_eq!(
            redis_where("redis://:hunter2@db.internal:6380/2"),
            "db.internal:6380"
        );
        assert_eq!(redis_where("rediss://user:pw@cache"), "cache:6379");
        assert_eq!(redis_where("not a url :pw@"), "the Redis URL given");
        assert_eq!(
            redis_where("redis+sentinel://u:hunter2@10.0.0.1:26379,10.0.0.2/main"),
            "master \"main\" of the sentinels 10.0.0.1:26379, 10.0.0.2:26379"
        );
        assert_eq!(
            redis_where("redis+cluster://:hunter2@10.0.0.1:7000,10.0.0.2"),
            "the cluster of 10.0.0.1:7000, 10.0.0.2:6379"
        );
    }

    #[test]
    fn demo_logs_warnings_only_unless_told() {
        let demo = Cli::try_parse_from(["lsq-webhooks", "demo"]).map(|c| c.command);
        assert!(matches!(
            demo.as_ref().map(Command::default_log_level),
            Ok("warn")
        ));
        let worker = Cli::try_parse_from(["lsq-webhooks", "worker"]).map(|c| c.command);
        assert!(matches!(
            worker.as_ref().map(Command::default_log_level),
            Ok("info")
        ));
    }
}
