//! The command line: global options, one file per command (each with its `Args` and `run`),
//! and the mapping of errors to exit codes (0 success, 1 failure, 2 bad usage or input,
//! 141 when standard output's reader went away: see [`output`]).
#![warn(clippy::print_stdout)]

pub mod dead;
pub mod demo;
pub mod enqueue;
pub mod output;
pub mod results;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod tenants;
pub mod worker;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
    #[arg(long = "redis", env = "REDIS_URL", value_name = "URL", global = true)]
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
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text, global = true)]
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
        }
    }

    /// The Redis URL only if one was given (flag or environment; an empty value is none):
    /// `demo` runs without Redis otherwise.
    pub fn redis_given(&self) -> Option<&str> {
        self.redis.as_deref().filter(|url| !url.trim().is_empty())
    }
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
    /// Drain the queue: call LeadSquared for each job, within each tenant's limit.
    Worker(worker::Args),
    /// Show what is queued, scheduled, running, done and dead, per tenant.
    Status(status::Args),
    /// One row per finished job.
    Results(results::Args),
    /// Dead-letter handling.
    #[command(subcommand)]
    Dead(dead::Command),
    /// HTTP API for producers and ops, metrics and the status page.
    Serve(serve::Args),
    /// Run a LeadSquared API simulator.
    Simulate(simulate::Args),
    /// Run the whole thing against the simulator, with a progress display.
    Demo(demo::Args),
}

/// A usage or input error: exit code 2. Anything else a command returns is exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The queue settings the global options give (`--queue`); the rest are defaults.
pub fn queue_config(global: &Global) -> crate::queue::QueueConfig {
    crate::queue::QueueConfig {
        name: global.queue.clone(),
        ..Default::default()
    }
}

/// Connects to the Redis queue named by the global options. A queue name that cannot be
/// used is bad input (exit 2).
pub async fn connect_queue(global: &Global) -> anyhow::Result<crate::queue::redis::RedisQueue> {
    use crate::queue::{QueueError, redis::RedisQueue};
    match RedisQueue::connect_with(
        global.redis_url(),
        queue_config(global),
        global.redis_options(),
    )
    .await
    {
        Ok(q) => Ok(q),
        Err(QueueError::Config(reason)) => Err(BadInput(reason).into()),
        Err(e) => Err(anyhow::Error::new(e).context("connecting to the Redis queue")),
    }
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let global = cli.global;
    let result = match cli.command {
        Command::Tenants(c) => tenants::run(&global, c).await,
        Command::Enqueue(a) => enqueue::run(&global, a).await,
        Command::Worker(a) => worker::run(&global, a).await,
        Command::Status(a) => status::run(&global, a).await,
        Command::Results(a) => results::run(&global, a).await,
        Command::Dead(c) => dead::run(&global, c).await,
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
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
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
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&spec)
            .unwrap_or_else(|e| {
                eprintln!(
                    "warning: RUST_LOG={spec:?} is not a valid filter ({e}); using {default_level}"
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
